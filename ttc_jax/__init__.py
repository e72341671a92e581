"""ttc_jax: compute-optimal test-time compute (Snell et al., arXiv 2408.03314) in JAX."""
