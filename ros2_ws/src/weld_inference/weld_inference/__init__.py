"""weld_inference: classify RGB-D weld frame pairs on the board, model first, rules as the fallback."""
