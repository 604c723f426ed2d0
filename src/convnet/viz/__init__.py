"""Figures: functions that return or write images (plots, grids, feature maps, Grad-CAM)."""
