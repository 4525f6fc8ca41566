"""Training: candidate generators (implicit and simple baselines), the XGBoost
learning-to-rank ranker with its point-in-time feature join, and dynamic data management
(reduced history, fewer negatives, selected features)."""
