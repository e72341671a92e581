"""Test-time search against a verifier (paper §5); importing the package registers the built-ins."""

# The built-in strategies register themselves in `base` on import.
from ttc_jax.search import beam, best_of_n, dvts, lookahead  # pylint: disable=unused-import
