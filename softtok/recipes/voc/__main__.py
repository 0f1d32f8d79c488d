"""``python -m softtok.recipes.voc <stage>``: see :mod:`softtok.recipes.voc.cli`."""

from softtok.recipes.voc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
