"""ResQ: residual quantization for video perception (issue 9, in progress): quantizers so far."""
