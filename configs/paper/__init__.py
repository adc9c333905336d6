"""The MVKT authors' recipes (QINYZz/MVKT-ECG, commit 209abc76) as lead_kt configs."""
