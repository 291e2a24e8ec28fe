"""``init_*_wf`` factories and the participant and group levels."""
