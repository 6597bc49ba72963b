"""wsseg: semantic segmentation from cheap labels."""
