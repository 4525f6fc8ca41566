"""Monitoring: drift, quality, prediction drift and delayed performance monitors, the loop's
event log and retraining decision with its KPIs, the timeline and the operations dashboard."""
