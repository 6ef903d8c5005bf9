"""The generator's bodies: signed PCS the server's own code accepts, one fresh
``pcs_id`` each, resends at the asked share, both key kinds and both versions."""

from __future__ import annotations

import pytest

from flk_fast.benchsuite.bodies import BodySource, load_signer
from flk_fast.errors import ConfigError, KeyLoadError
from flk_fast.protocol.codec import decode_pcs
from flk_fast.protocol.signing import (
    Ed25519Key,
    Keyring,
    generate_ed25519,
    load_ed25519_public,
)
from flk_fast.protocol.verify import verify_pcs

pytestmark = pytest.mark.needs_ext  # the PCS signals come from the agent's kernels


@pytest.mark.parametrize("version", ["0.2", "0.1"])
def test_fresh_bodies_verify_and_each_has_its_own_id(key_file, version):
    source = BodySource(load_signer(str(key_file)), shard_id="s1", version=version)
    ring = Keyring.hmac({"k": key_file.read_bytes()})
    docs = [decode_pcs(b) for b in source.take(200)]
    assert len({d.pcs_id for d in docs}) == 200
    assert len({d.epoch for d in docs}) == 200
    for d in docs[:20]:
        assert ring.verify(d) == "k"
        verdict = verify_pcs(d)
        assert verdict.accepted and not verdict.escalated
        assert d.shard_id == "s1" and d.version == version
    assert source.fresh == 200 and source.resent == 0


def test_ed25519_bodies_verify(tmp_path):
    generate_ed25519(tmp_path / "k.pem", tmp_path / "k.pub")
    source = BodySource(load_signer(ed25519_key_file=str(tmp_path / "k.pem")))
    ring = Keyring({"ed": Ed25519Key(load_ed25519_public(tmp_path / "k.pub"))})
    assert ring.verify(decode_pcs(source.next())) == "ed"


def test_resends_are_earlier_bodies_at_the_asked_share(key_file):
    source = BodySource(load_signer(str(key_file)), resend_ratio=0.3, seed=7)
    bodies = source.take(2000)
    ids = [decode_pcs(b).pcs_id for b in bodies]
    repeats = len(ids) - len(set(ids))
    assert source.resent + source.fresh == 2000
    assert repeats == source.resent  # a resend is byte-for-byte an earlier body
    assert 0.25 <= source.resent / 2000 <= 0.35


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 2.0])
def test_a_resend_ratio_out_of_range_is_refused(key_file, ratio):
    with pytest.raises(ConfigError, match="--resend-ratio must be in"):
        BodySource(load_signer(str(key_file)), resend_ratio=ratio)


def test_the_hmac_secret_may_come_from_an_env_var(key_file, monkeypatch):
    monkeypatch.setenv("FLK_TEST_BENCH_KEY", key_file.read_text())
    body = BodySource(load_signer(hmac_key_env="FLK_TEST_BENCH_KEY")).next()
    assert Keyring.hmac({"k": key_file.read_bytes()}).verify(decode_pcs(body)) == "k"
    monkeypatch.delenv("FLK_TEST_BENCH_KEY")
    with pytest.raises(KeyLoadError, match="FLK_TEST_BENCH_KEY is not set"):
        load_signer(hmac_key_env="FLK_TEST_BENCH_KEY")


def test_exactly_one_key_source(key_file):
    with pytest.raises(ConfigError, match="exactly one"):
        load_signer()
    with pytest.raises(ConfigError, match="exactly one"):
        load_signer(str(key_file), str(key_file))
    with pytest.raises(ConfigError, match="exactly one"):
        load_signer(str(key_file), hmac_key_env="X")
