"""ditkit: train, sample, accelerate, compress and serve Diffusion Transformers."""
