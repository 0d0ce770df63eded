"""Parts of the vector `sleep` learner only: its stages, generative model, curriculum bandit, low-rank experts."""
