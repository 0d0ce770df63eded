"""Test-time memory kernels (functional ops with recurrent and chunkwise forms) and the layers built on them."""
