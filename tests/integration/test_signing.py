"""Signed pushes checked by verifiers we did not write, against a real docker-registry (distribution 2.8).

- containers/image (skopeo 1.9.3, podman 4.3.1) reads our ``.sig`` attachments and writes its
  own, which our ``verify`` accepts (the formats agree both ways); OpenSSL's CLI checks our
  signature over the payload skopeo handed out; securesystemslib checks our provenance's
  DSSE envelope.
- The ``sigstoreSigned`` policy refuses an unsigned image and a tag moved to an unsigned
  digest; acceptance of the signed one needs a containers/image built with sigstore: Debian
  bookworm's is patched to refuse every sigstore signature ("Debian-local change: sigstore
  disabled"), and the test says so by skipping that one assertion there.
- Bad input: a wrong password, an unsupported key, a registry refusing the ``.sig`` tag.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.recipe_fixtures import QuickRecipe
from tests.integration.registry_fixtures import FaultProxy, Registry

DEBIAN_NO_SIGSTORE = "Debian-local change: sigstore disabled"
PASSWORD = "correct horse"


def _cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"COSIGN_PASSWORD": PASSWORD, **(env or {})}, input=input, cwd=cwd)


def _json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ociassemble-sign-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, Path]:
    """``cosign`` and ``other`` from ``ociassemble keygen`` (encrypted cosign keys); ``openssl``: a
    PKCS #8 PEM key and its public key made by the openssl CLI."""
    out = {}
    for name in ("cosign", "other"):
        result = _json(_cli("keygen", "--output-key-prefix", str(work / name), "--json"))
        assert result["privateKey"] == str(work / f"{name}.key")
        assert (work / f"{name}.key").stat().st_mode & 0o777 == 0o600
        out[name] = work / name
    ossl = work / "openssl"
    subprocess.run(f"openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {ossl}.key"
                   f" && openssl pkey -in {ossl}.key -pubout -out {ossl}.pub", shell=True, check=True)
    out["openssl"] = ossl
    return out


@pytest.fixture(scope="module")
def images(work: Path) -> dict[str, Path]:
    """Two small images (``a``, ``b``: different digests) and a two-platform one (``multi``) as OCI layouts."""
    out = {}
    for name, platform in (("a", None), ("b", None), ("multi", "linux/amd64,linux/arm64")):
        src = work / f"src-{name}"
        src.mkdir()
        (src / "hello.txt").write_text(f"image {name}\n")
        args = ["build", "--plain", "--base", "scratch", "--layer", f"{src}:/app", "-o", f"oci:{work / name}:latest",
                "--cache-dir", str(work / "cache"), "-q"]
        proc = _cli(*args, *(["--platform", platform] if platform else []))
        assert proc.returncode == 0, proc.stderr
        out[name] = work / name
    return out


@pytest.fixture(scope="module")
def sigstore_config(work: Path, plain_registry: Registry, keys: dict[str, Path]) -> dict[str, Path]:
    """A registries.d turning on sigstore attachments for the registry, and two policies:
    ``any`` (accept anything) and ``signed`` (sigstoreSigned by cosign.pub, matchRepository)."""
    regd = work / "home" / ".config" / "containers" / "registries.d"
    regd.mkdir(parents=True)
    (regd / "local.yaml").write_text(f"docker:\n  {plain_registry.host}:\n    use-sigstore-attachments: true\n")
    policies = {"any": {"default": [{"type": "insecureAcceptAnything"}]},
                "signed": {"default": [{"type": "reject"}], "transports": {"docker": {plain_registry.host: [
                    {"type": "sigstoreSigned", "keyPath": f"{keys['cosign']}.pub",
                     "signedIdentity": {"type": "matchRepository"}}]}}}}
    out = {"registries.d": regd, "home": work / "home"}
    for name, doc in policies.items():
        (work / f"policy-{name}.json").write_text(json.dumps(doc))
        out[name] = work / f"policy-{name}.json"
    return out


#: go-securesystemslib's Decrypt, as cosign and containers/image open cosign.key, written out with the
#: same Go primitives (golang.org/x/crypto's scrypt and nacl/secretbox, crypto/x509): the PEM block's
#: JSON into the Go struct (base64 []byte fields), scrypt(N, r, p, 32), secretbox.Open, PKCS #8.
GO_KEY_READER = r"""
package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"

	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

type box struct {
	KDF struct {
		Name   string `json:"name"`
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"`
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

func main() {
	raw, _ := os.ReadFile(os.Args[1])
	block, _ := pem.Decode(raw)
	var b box
	if err := json.Unmarshal(block.Bytes, &b); err != nil {
		panic(err)
	}
	key, err := scrypt.Key([]byte(os.Getenv("COSIGN_PASSWORD")), b.KDF.Salt, b.KDF.Params.N, b.KDF.Params.R, b.KDF.Params.P, 32)
	if err != nil {
		panic(err)
	}
	var k [32]byte
	var n [24]byte
	copy(k[:], key)
	copy(n[:], b.Cipher.Nonce)
	der, ok := secretbox.Open(nil, b.Ciphertext, &n, &k)
	if !ok {
		fmt.Println("decryption failed")
		os.Exit(1)
	}
	pk, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		panic(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&pk.(*ecdsa.PrivateKey).PublicKey)
	fmt.Printf("%s\n%s\n%x\n", block.Type, pk.(*ecdsa.PrivateKey).Curve.Params().Name, pub[len(pub)-8:])
}
"""
GO_PATH = Path("/usr/share/gocode")  # Debian's golang-golang-x-crypto-dev


def test_keygen_key_opens_with_go_x_crypto(keys: dict[str, Path], work: Path) -> None:
    """The private key ``keygen`` wrote opens with Go's x/crypto as cosign opens it, and is the
    P-256 key whose public half is cosign.pub; a wrong password does not open it."""
    if shutil.which("go") is None or not (GO_PATH / "src/golang.org/x/crypto/nacl/secretbox").is_dir():
        pytest.skip("go or golang.org/x/crypto (Debian: golang-go, golang-golang-x-crypto-dev) is not installed")
    src = work / "gokey" / "main.go"
    src.parent.mkdir()
    src.write_text(GO_KEY_READER)
    env = {**os.environ, "GOPATH": str(GO_PATH), "GO111MODULE": "off", "GOCACHE": str(work / "gocache"), "GOFLAGS": ""}
    subprocess.run(["go", "build", "-o", str(src.parent / "keycheck"), str(src)], env=env, check=True,
                   capture_output=True, timeout=300)
    opened = subprocess.run([str(src.parent / "keycheck"), f"{keys['cosign']}.key"], capture_output=True, text=True,
                            env={**env, "COSIGN_PASSWORD": PASSWORD})
    assert opened.returncode == 0, opened.stdout + opened.stderr
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", f"{keys['cosign']}.pub", "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert opened.stdout.splitlines() == ["ENCRYPTED COSIGN PRIVATE KEY", "P-256", der[-8:].hex()]
    wrong = subprocess.run([str(src.parent / "keycheck"), f"{keys['cosign']}.key"], capture_output=True, text=True,
                           env={**env, "COSIGN_PASSWORD": "not it"})
    assert wrong.returncode == 1 and "decryption failed" in wrong.stdout


def _push(image: Path, ref: str, *args: str, key: Path | None = None, env: dict[str, str] | None = None,
          cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    sign = ["--sign-key", f"{key}.key"] if key else []
    return _cli("push", "--from", f"oci:{image}:latest", ref, *sign, "--json",
                "--cache-dir", str(cache or image.parent / "cache"), *args, env=env)


def _skopeo(*args: str, config: dict[str, Path], policy: str = "any") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--policy", str(config[policy]), "--registries.d", str(config["registries.d"]),
                           *args], capture_output=True, text=True, timeout=120)


def _blob(registry: Registry, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=30) as resp:
        return resp.read()


def _manifest(registry: Registry, repo: str, ref: str) -> dict | None:
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                    "application/vnd.oci.image.index.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _sig_tag(digest: str, suffix: str = ".sig") -> str:
    return digest.replace(":", "-") + suffix


def test_signed_push_is_read_by_skopeo_and_checked_by_openssl(plain_registry: Registry, images: dict[str, Path],
                                                               keys: dict[str, Path], sigstore_config: dict[str, Path],
                                                               work: Path) -> None:
    ref = f"{plain_registry.host}/sign/app:1"
    pushed = _json(_push(images["a"], ref, key=keys["cosign"]))
    digest = pushed["digest"]
    [sig] = pushed["signatures"]
    assert sig["subject"] == digest and sig["added"] is True and sig["referrer"] is None  # distribution 2.8: no referrers API
    assert sig["ref"] == f"{plain_registry.host}/sign/app:{_sig_tag(digest)}"
    # cosign's layout, as the registry holds it
    stored = _manifest(plain_registry, "sign/app", _sig_tag(digest))
    assert stored is not None and stored["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    [layer] = stored["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    config = json.loads(_blob(plain_registry, "sign/app", stored["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]

    # containers/image reads the attachment: skopeo copies the signature with the image
    out = work / "copied-a"
    proc = _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}", config=sigstore_config)
    assert proc.returncode == 0, proc.stderr
    blob = (out / "signature-1").read_bytes()
    assert blob.startswith(b"\x00sigstore-json\n")
    sig_doc = json.loads(blob.split(b"\n", 1)[1])
    assert sig_doc["mimeType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = base64.b64decode(sig_doc["payload"])
    assert json.loads(payload) == {"critical": {"identity": {"docker-reference": f"{plain_registry.host}/sign/app"},
                                                "image": {"docker-manifest-digest": digest},
                                                "type": "cosign container image signature"}, "optional": None}
    # OpenSSL, not our code, checks the signature over that payload with cosign.pub
    (work / "payload").write_bytes(payload)
    (work / "payload.sig").write_bytes(base64.b64decode(sig_doc["annotations"]["dev.cosignproject.cosign/signature"]))
    check = subprocess.run(["openssl", "dgst", "-sha256", "-verify", f"{keys['cosign']}.pub", "-signature",
                            str(work / "payload.sig"), str(work / "payload")], capture_output=True, text=True)
    assert check.returncode == 0 and "Verified OK" in check.stdout, check.stdout + check.stderr

    verified = _json(_cli("verify", ref, "--key", f"{keys['cosign']}.pub", "--json"))
    assert verified["digest"] == digest and verified["verified"] is True
    assert verified["signatures"] == [{"dockerReference": f"{plain_registry.host}/sign/app"}]
    other = _cli("verify", ref, "--key", f"{keys['other']}.pub")
    assert other.returncode == 1 and other.stderr.count("\n") <= 2, other.stderr
    assert "no valid signature by this key (1 found: signed by another key)" in other.stderr

    # pushing again adds nothing: the same signature (same key, same payload) is there
    again = _json(_push(images["a"], ref, key=keys["cosign"]))
    assert again["signatures"][0]["added"] is False and again["signatures"][0]["digest"] == sig["digest"]


def test_signature_written_by_containers_image_verifies_with_ours(plain_registry: Registry, images: dict[str, Path],
                                                                 keys: dict[str, Path], sigstore_config: dict[str, Path],
                                                                 work: Path) -> None:
    """The other way: skopeo's own ``--sign-by-sigstore-private-key`` signature (with keygen's
    key) verifies with ``verify``, where skopeo can sign; Debian's cannot (its containers/image
    is patched), so there a signature made by OpenSSL, stored by skopeo (containers/image's own
    manifest and config for the .sig tag), is what ``verify`` must accept; our push then appends
    to that tag and skopeo reads both."""
    ref = f"{plain_registry.host}/sign/theirs:1"
    (work / "key-password").write_text(PASSWORD)
    signed = _skopeo("copy", "--dest-tls-verify=false", "--sign-by-sigstore-private-key", f"{keys['cosign']}.key",
                     "--sign-passphrase-file", str(work / "key-password"), f"oci:{images['a']}:latest",
                     f"docker://{plain_registry.host}/sign/skopeo-signed:1", config=sigstore_config)
    if DEBIAN_NO_SIGSTORE not in signed.stderr:  # a skopeo with sigstore: its signature, keygen's key
        assert signed.returncode == 0, signed.stderr
        verified = _json(_cli("verify", f"{plain_registry.host}/sign/skopeo-signed:1", "--key", f"{keys['cosign']}.pub", "--json"))
        assert verified["signatures"], verified
    layout = work / "theirs"
    assert _skopeo("copy", f"oci:{images['a']}:latest", f"dir:{layout}", config=sigstore_config).returncode == 0
    digest = subprocess.run(["skopeo", "manifest-digest", str(layout / "manifest.json")], capture_output=True,
                            text=True, check=True).stdout.strip()
    # as containers/image signs: the full reference with its tag, a creator and a timestamp in "optional"
    payload = json.dumps({"critical": {"identity": {"docker-reference": ref}, "image": {"docker-manifest-digest": digest},
                                       "type": "cosign container image signature"},
                          "optional": {"creator": "openssl, by hand", "timestamp": 1700000000}}).encode()
    (work / "theirs.payload").write_bytes(payload)
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{keys['openssl']}.key", str(work / "theirs.payload")],
                         capture_output=True, check=True).stdout
    doc = {"mimeType": "application/vnd.dev.cosign.simplesigning.v1+json", "payload": base64.b64encode(payload).decode(),
           "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()}}
    (layout / "signature-1").write_bytes(b"\x00sigstore-json\n" + json.dumps(doc).encode())
    proc = _skopeo("copy", "--dest-tls-verify=false", f"dir:{layout}", f"docker://{ref}", config=sigstore_config)
    assert proc.returncode == 0, proc.stderr

    verified = _json(_cli("verify", ref, "--key", f"{keys['openssl']}.pub", "--json"))
    assert verified["digest"] == digest and verified["signatures"] == [{"dockerReference": ref}]
    assert _cli("verify", ref, "--key", f"{keys['cosign']}.pub").returncode == 1

    # our signature, by the openssl PKCS #8 key (plain PEM), is appended to skopeo's tag
    pushed = _json(_push(images["a"], ref, key=keys["openssl"]))
    assert pushed["signatures"][0]["added"] is True
    stored = _manifest(plain_registry, "sign/theirs", _sig_tag(digest))
    assert stored is not None and len(stored["layers"]) == 2
    both = _json(_cli("verify", ref, "--key", f"{keys['openssl']}.pub", "--json"))
    assert len(both["signatures"]) == 2
    out = work / "theirs-copied"
    assert _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}", config=sigstore_config).returncode == 0
    assert sorted(p.name for p in out.glob("signature-*")) == ["signature-1", "signature-2"]


def _podman(config: dict[str, Path], ref: str) -> subprocess.CompletedProcess[str]:
    from tests.e2e.conftest import podman_command

    storage = Path(tempfile.mkdtemp(prefix="ociassemble-podman-sign-"))
    runroot = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp"))
    try:
        cmd = [*podman_command(storage / "root", runroot), "pull", "--tls-verify=false",
               "--signature-policy", str(config["signed"]), ref]
        # containers/image reads registries.d from $HOME/.config/containers/registries.d
        env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE")}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "HOME": str(config["home"])})
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture(scope="module")
def policy_refs(plain_registry: Registry, images: dict[str, Path], keys: dict[str, Path]) -> dict[str, str]:
    """Images for the policy: signed by cosign.key, unsigned, signed by another key, and a tag
    moved (after signing) to an image nobody signed."""
    host = plain_registry.host
    refs = {"signed": f"{host}/policy/signed:1", "unsigned": f"{host}/policy/unsigned:1",
            "other": f"{host}/policy/other:1", "moved": f"{host}/policy/moved:1"}
    refs["a"] = _json(_push(images["a"], refs["signed"], key=keys["cosign"]))["digest"]
    _json(_push(images["a"], refs["unsigned"]))
    other = _json(_push(images["a"], refs["other"], env={"OCIASSEMBLE_SIGN_KEY": f"{keys['other']}.key"}))
    assert other["signatures"][0]["added"] is True  # the key named by the environment
    _json(_push(images["a"], refs["moved"], key=keys["cosign"]))
    refs["b"] = _json(_push(images["b"], refs["moved"]))["digest"]  # the tag now names b, which nobody signed
    return refs


@pytest.mark.parametrize("tool", ["skopeo", "podman"])
def test_sigstore_signed_policy(tool: str, policy_refs: dict[str, str], sigstore_config: dict[str, Path],
                                work: Path) -> None:
    """policy.json ``sigstoreSigned`` + ``matchRepository``: the unsigned image, the one signed by
    another key, and a tag moved to an unsigned digest are refused; the signed one is admitted
    (where containers/image has sigstore: not in Debian bookworm, see the module docstring)."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    refs = policy_refs

    def pull(name: str) -> subprocess.CompletedProcess[str]:
        if tool == "skopeo":
            return _skopeo("copy", "--src-tls-verify=false", f"docker://{refs[name]}", f"dir:{work / f'{tool}-{name}'}",
                           config=sigstore_config, policy="signed")
        return _podman(sigstore_config, refs[name])

    for name in ("unsigned", "moved"):
        proc = pull(name)
        assert proc.returncode != 0 and "A signature was required, but no signature exists" in proc.stderr, proc.stderr
    other = pull("other")
    assert other.returncode != 0 and "no signature exists" not in other.stderr, other.stderr  # found, not accepted
    signed = pull("signed")
    if DEBIAN_NO_SIGSTORE in signed.stderr:
        pytest.skip(f"{tool} here is built with sigstore verification disabled ({DEBIAN_NO_SIGSTORE!r}): it found "
                    "our signature and refuses every sigstore signature, so acceptance cannot be shown with it")
    assert signed.returncode == 0, signed.stderr


def test_tag_moved_to_another_digest_is_refused_by_verify(plain_registry: Registry, policy_refs: dict[str, str],
                                                          keys: dict[str, Path], sigstore_config: dict[str, Path]) -> None:
    host, pub = plain_registry.host, f"{keys['cosign']}.pub"
    a, b = policy_refs["a"], policy_refs["b"]
    proc = _cli("verify", policy_refs["moved"], "--key", pub)  # signed as a, then the tag moved to b
    assert proc.returncode == 1 and f"@{b} has no signature" in proc.stderr, proc.stderr
    # an attacker copies a's signature to b's .sig tag (in a copy of the repository, which the
    # policy test reads as it is): it names a's digest, so it does not count
    for src, dest in ((policy_refs["moved"], f"{host}/sign/moved:1"),
                      (f"{host}/policy/moved:{_sig_tag(a)}", f"{host}/sign/moved:{_sig_tag(b)}")):
        copy = _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{src}",
                       f"docker://{dest}", config=sigstore_config)
        assert copy.returncode == 0, copy.stderr
    proc = _cli("verify", f"{host}/sign/moved:1", "--key", pub)
    assert proc.returncode == 1 and f"signed for {a}" in proc.stderr, proc.stderr
    # a's signature for another repository does not count for this one either
    for src, dest in ((policy_refs["unsigned"], f"{host}/sign/other-repo:1"),
                      (f"{host}/policy/signed:{_sig_tag(a)}", f"{host}/sign/other-repo:{_sig_tag(a)}")):
        copy = _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{src}",
                       f"docker://{dest}", config=sigstore_config)
        assert copy.returncode == 0, copy.stderr
    proc = _cli("verify", f"{host}/sign/other-repo:1", "--key", pub)
    assert proc.returncode == 1 and f"signed for repository {host}/policy/signed" in proc.stderr, proc.stderr


def test_multi_platform_signs_index_and_each_manifest(plain_registry: Registry, images: dict[str, Path],
                                                      keys: dict[str, Path]) -> None:
    ref = f"{plain_registry.host}/sign/multi:1"
    pushed = _json(_push(images["multi"], ref, key=keys["cosign"]))
    platforms = [m["digest"] for m in pushed["manifests"]]
    assert len(platforms) == 2
    assert [s["subject"] for s in pushed["signatures"]] == [pushed["digest"], *platforms]
    for digest in [pushed["digest"], *platforms]:
        verified = _json(_cli("verify", f"{plain_registry.host}/sign/multi@{digest}", "--key", f"{keys['cosign']}.pub",
                              "--json"))
        assert verified["digest"] == digest


def test_provenance_verifies_with_securesystemslib(plain_registry: Registry, quick_recipe: QuickRecipe,
                                                   keys: dict[str, Path]) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    project = quick_recipe.project("signed-provenance")
    (project / "requirements.txt").write_text("")
    (project / "ociassemble.lock").write_text("# a lock file\n")
    ref = f"{plain_registry.host}/sign/provenance:1"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.example", "GITHUB_REPOSITORY": "team/model",
           "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_SHA": "a" * 40, "GITHUB_REF": "refs/heads/main",
           "GITHUB_WORKFLOW_REF": "team/model/.github/workflows/push.yml@refs/heads/main", "GITHUB_EVENT_NAME": "push"}
    pushed = _json(_cli("push", ref, *quick_recipe.inputs(project)[1:], "-r", str(project / "requirements.txt"),
                        "--sign-key", f"{keys['cosign']}.key", "--provenance", "--sbom", "--json", env=env, cwd=project))
    digest = pushed["digest"]
    [att] = pushed["provenance"]
    assert att["subject"] == digest and att["ref"].endswith(_sig_tag(digest, ".att"))
    stored = _manifest(plain_registry, "sign/provenance", _sig_tag(digest, ".att"))
    assert stored is not None
    [layer] = stored["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == "https://slsa.dev/provenance/v1"
    envelope = json.loads(_blob(plain_registry, "sign/provenance", layer["digest"]))

    # securesystemslib (not our code) checks the DSSE signature with cosign.pub
    key = SSlibKey(keyid="", keytype="ecdsa", scheme="ecdsa-sha2-nistp256",
                   keyval={"public": Path(f"{keys['cosign']}.pub").read_text()})
    parsed = Envelope.from_dict(envelope)
    assert parsed.verify([key], 1)
    other = SSlibKey(keyid="", keytype="ecdsa", scheme="ecdsa-sha2-nistp256",
                     keyval={"public": Path(f"{keys['other']}.pub").read_text()})
    with pytest.raises(Exception, match="threshold"):
        parsed.verify([other], 1)

    statement = json.loads(parsed.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"] == [{"name": f"{plain_registry.host}/sign/provenance",
                                     "digest": {"sha256": digest.split(":", 1)[1]}}]
    build = statement["predicate"]["buildDefinition"]
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    import hashlib

    assert deps["model model:1"]["digest"] == {"sha256": hashlib.sha256(b"a tiny model\n").hexdigest()}
    assert deps["model model:1"]["uri"] == "model.bin"
    assert deps["lock file"]["digest"] == {"sha256": hashlib.sha256(b"# a lock file\n").hexdigest()}
    assert deps["requirements"]["digest"] == {"sha256": hashlib.sha256(b"").hexdigest()}
    assert any(name.startswith("base ") for name in deps)
    source_layer = next(l for l in pushed["layers"] if l["what"] == "source")
    assert deps["source tree"]["digest"] == {"sha256": source_layer["diffID"].split(":", 1)[1]}
    assert deps["source"] == {"name": "source", "uri": "git+https://github.example/team/model@refs/heads/main",
                              "digest": {"gitCommit": "a" * 40}}
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == "https://github.example/team/model/.github/workflows/push.yml@refs/heads/main"
    assert run["builder"]["version"]["ociassemble"]
    assert run["metadata"]["invocationId"] == "https://github.example/team/model/actions/runs/42/attempts/2"
    assert run["byproducts"][0]["digest"] == {"sha256": pushed["sbom"]["digest"].split(":", 1)[1]}

    verified = _json(_cli("verify", ref, "--key", f"{keys['cosign']}.pub", "--provenance", "--json"))
    assert verified["provenance"][0]["builder"] == run["builder"]["id"]
    from tests.unit.test_cli import _doc_examples, _same_shape, _shape

    _same_shape(_shape(_doc_examples()["verify --key"]), _shape(verified))  # docs/json.md says what this is
    assert _cli("verify", ref, "--key", f"{keys['other']}.pub", "--provenance").returncode == 1


def test_wrong_password_and_unsupported_keys_push_nothing(plain_registry: Registry, images: dict[str, Path],
                                                         keys: dict[str, Path], work: Path) -> None:
    ref = f"{plain_registry.host}/sign/refused:1"
    proc = _push(images["a"], ref, key=keys["cosign"], env={"COSIGN_PASSWORD": "wrong"})
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "wrong password for the key" in line and "COSIGN_PASSWORD" in line
    proc = _cli("push", "--from", f"oci:{images['a']}:latest", ref, "--sign-key", f"{keys['cosign']}.key",
                "--sign-key-password-stdin", "--cache-dir", str(work / "cache"), input="also wrong\n")
    assert proc.returncode == 1 and "wrong password" in proc.stderr
    # an RSA key as openssl writes it (PKCS #1); the other types are refused the same way (tests/unit/test_signing_keys.py)
    rsa_key = work / "rsa.pem"
    rsa_key.write_bytes(subprocess.run(["openssl", "genrsa", "-traditional", "2048"], capture_output=True,
                                       check=True).stdout)
    proc = _cli("push", "--from", f"oci:{images['a']}:latest", ref, "--sign-key", str(rsa_key),
                "--cache-dir", str(work / "cache"))
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "is an RSA key: ociassemble signs and verifies with ECDSA P-256 keys" in line and "ociassemble keygen" in line
    proc = _cli("push", "--from", f"oci:{images['a']}:latest", ref, "--sign-key", f"{keys['cosign']}.pub",
                "--cache-dir", str(work / "cache"))
    assert proc.returncode == 1 and "is a public key" in proc.stderr
    assert _manifest(plain_registry, "sign/refused", "1") is None  # nothing was pushed


def test_registry_refusing_the_signature_says_the_image_was_pushed(plain_registry: Registry, proxy: FaultProxy,
                                                                    images: dict[str, Path],
                                                                    keys: dict[str, Path]) -> None:
    proxy.add("PUT", r"/manifests/sha256-[0-9a-f]{64}\.sig$", "status", status=403, times=None,
              body=b'{"errors":[{"code":"DENIED","message":"signatures are not allowed here"}]}')
    ref = f"{proxy.host}/sign/denied:1"
    proc = _push(images["a"], ref, key=keys["cosign"])
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("ociassemble: error: pushed sha256:") and "but its signature was not stored" in line, line
    assert "HTTP 403" in line and "signatures are not allowed here" in line, line
    digest = line.split("pushed ", 1)[1].split(" ", 1)[0]
    req = urllib.request.Request(f"{plain_registry.url}/v2/sign/denied/manifests/1", method="HEAD",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # the image itself is there, as the line says
        assert resp.headers["Docker-Content-Digest"] == digest
    assert _manifest(plain_registry, "sign/denied", _sig_tag(digest)) is None


def test_referrers_api_gets_a_referrer_too(plain_registry: Registry, proxy: FaultProxy, images: dict[str, Path],
                                           keys: dict[str, Path]) -> None:
    """A registry that answers the OCI 1.1 referrers API (here the proxy answers it in front of
    distribution 2.8, which stores a manifest with ``subject`` as it is) also gets the signature
    as a referrer: cosign's artifactType, the image as subject; the .sig tag is written as well."""
    proxy.add("GET", r"/referrers/sha256:", "status", status=200, times=None,
              headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
              body=b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}')
    pushed = _json(_push(images["a"], f"{proxy.host}/sign/referrers:1", key=keys["cosign"]))
    [sig] = pushed["signatures"]
    assert sig["referrer"] is not None
    art = _manifest(plain_registry, "sign/referrers", sig["referrer"])
    assert art is not None and art["artifactType"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert art["subject"]["digest"] == pushed["digest"]
    assert art["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]
    assert _manifest(plain_registry, "sign/referrers", _sig_tag(pushed["digest"])) is not None
