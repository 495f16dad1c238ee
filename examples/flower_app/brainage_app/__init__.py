"""A small Flower app of its own (not fedsim's) that trains a brain-age CNN, recorded for fedsim's audit."""
