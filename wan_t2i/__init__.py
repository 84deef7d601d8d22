"""wan-t2i: sample Wan text-to-image students with the sampler they were trained for."""
