"""A key of a shared KV collection is won by one claimant only (mailsec.core.kvclaim)."""

from mailsec.core.kvclaim import new_claim, try_claim


class Store:
    """Insert-if-absent like the KV store (409 on an existing key)."""

    def __init__(self):
        self.records = {}

    def get(self, key):
        return self.records.get(key)

    def insert(self, key, state):
        if key in self.records:
            return False
        self.records[key] = dict(state)
        return True


def test_the_first_claimant_wins_and_the_second_loses():
    store = Store()
    first, second = new_claim("a", "x", 1.0), new_claim("b", "y", 2.0)
    assert first["nonce"] != second["nonce"]
    assert try_claim(store, "k", first)
    assert not try_claim(store, "k", second)
    assert store.get("k")["owner"] == "a"


def test_a_record_read_back_with_another_nonce_is_not_won():
    # the insert answered success but the key holds someone else's record
    # (a replica that had not seen the other insert yet)
    store = Store()
    store.insert = lambda key, state: True
    store.records["k"] = new_claim("other", "z", 0.0)
    assert not try_claim(store, "k", new_claim("me", "x", 1.0))


def test_an_unreadable_record_is_not_won():
    store = Store()
    store.insert = lambda key, state: True
    assert not try_claim(store, "k", new_claim("me", "x", 1.0))
