"""Images: measuring grain, comparing before/after."""
