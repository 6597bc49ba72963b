"""Scoring and reporting: the confusion matrix and its mIoU (`metrics`), the Markdown and HTML reports (`report`).
"""
