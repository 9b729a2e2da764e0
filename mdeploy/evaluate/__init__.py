"""Decoding heatmaps into keypoints, and the accuracy metrics of pose models."""
