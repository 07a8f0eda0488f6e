"""``make demo``: the whole mission end to end on an embedded real Wikipedia sample."""
