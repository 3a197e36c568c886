

def test_a_partitions_share_always_fits_one_table_value():
    """Pairs of artist ids of any length (up to 256 characters each) could make a share larger than
    a changelog record may be, which stops the worker at the write; the weakest go until it fits."""
    from streams.core.popularity import MAX_PAIRS_PER_PARTITION, Partial, dump_partial, load_partial
    from streams.core.records import MAX_TABLE_VALUE_BYTES

    p = Partial()
    p.pairs = {f"{i:05}{'a' * 250}|{'b' * 256}": 1 + i % 7 for i in range(MAX_PAIRS_PER_PARTITION)}
    p.pairs["strong|pair"] = 1000
    raw = dump_partial(p)
    assert len(raw) <= MAX_TABLE_VALUE_BYTES and load_partial(raw).pairs["strong|pair"] == 1000
