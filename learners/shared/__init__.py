"""Parts that two or more learners use: backbones, buffers, optimizers, data parallelism."""
