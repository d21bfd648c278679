"""Images at the edge: loading, face detection, 5-point alignment, quality, video frames."""
