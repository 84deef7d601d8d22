"""The embedded demo model: procedural scenes, a tiny Wan-format student, its training and evaluation."""
