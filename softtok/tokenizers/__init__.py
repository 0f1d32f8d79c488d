"""Audio -> features -> k-means -> hard tokens or soft assignments."""
