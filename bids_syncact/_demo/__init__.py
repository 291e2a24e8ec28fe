"""Parts of the demo dataset: the movie and the planted ground truth (independent of core/)."""
