"""The official evaluation protocol: ground truth, metrics, scoring, reports."""
