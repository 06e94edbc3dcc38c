"""Every asymmetric and HMAC key type through boto3, each result checked with Python's
`cryptography` (an independent implementation) against the public key the appliance hands out.

Usage: python3 key_types.py ENDPOINT ACCESS_KEY SECRET_KEY. Exits non-zero on any failure.
"""
import hashlib
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

endpoint, access, secret = sys.argv[1:4]
kms = boto3.client(
    "kms",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=access,
    aws_secret_access_key=secret,
    config=Config(retries={"max_attempts": 3}),
)

MESSAGE = b"signed by the appliance, checked by cryptography"


def error_code(fn, **kwargs):
    try:
        fn(**kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


def key(spec, usage):
    return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]


def public(key_id):
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    return serialization.load_der_public_key(der)


def sign(key_id, alg, message, message_type="RAW"):
    return kms.sign(
        KeyId=key_id, Message=message, MessageType=message_type, SigningAlgorithm=alg
    )["Signature"]


# ECDSA on every curve, RAW and DIGEST (a digest is signed as given, not hashed again).
for spec, alg, h in [
    ("ECC_NIST_P256", "ECDSA_SHA_256", hashes.SHA256()),
    ("ECC_NIST_P384", "ECDSA_SHA_384", hashes.SHA384()),
    ("ECC_NIST_P521", "ECDSA_SHA_512", hashes.SHA512()),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256", hashes.SHA256()),
]:
    k = key(spec, "SIGN_VERIFY")
    pub = public(k)
    pub.verify(sign(k, alg, MESSAGE), MESSAGE, ec.ECDSA(h))
    d = hashes.Hash(h)
    d.update(MESSAGE)
    digest = d.finalize()
    pub.verify(sign(k, alg, digest, "DIGEST"), digest, ec.ECDSA(utils.Prehashed(h)))
    # EXTERNAL_MU belongs to ML-DSA only.
    assert error_code(
        kms.sign, KeyId=k, Message=digest[:32] * 2, MessageType="EXTERNAL_MU",
        SigningAlgorithm=alg,
    ) == "ValidationException"
    # And the other way round: a signature made outside with another key is refused.
    other = ec.generate_private_key(pub.curve).sign(MESSAGE, ec.ECDSA(h))
    assert (
        error_code(
            kms.verify, KeyId=k, Message=MESSAGE, Signature=other, SigningAlgorithm=alg
        )
        == "KMSInvalidSignatureException"
    )

# RSA PSS (salt length = digest length) and PKCS#1 v1.5.
k = key("RSA_3072", "SIGN_VERIFY")
pub = public(k)
assert pub.key_size == 3072
for alg, h in [("RSASSA_PSS_SHA_384", hashes.SHA384()), ("RSASSA_PSS_SHA_256", hashes.SHA256())]:
    pub.verify(
        sign(k, alg, MESSAGE),
        MESSAGE,
        padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
        h,
    )
pub.verify(
    sign(k, "RSASSA_PKCS1_V1_5_SHA_512", MESSAGE), MESSAGE, padding.PKCS1v15(), hashes.SHA512()
)

# RSA OAEP: a ciphertext made here decrypts in the appliance.
k = key("RSA_2048", "ENCRYPT_DECRYPT")
pub = public(k)
ct = pub.encrypt(
    b"to the enclave",
    padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
)
out = kms.decrypt(KeyId=k, CiphertextBlob=ct, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
assert out["Plaintext"] == b"to the enclave"
assert out["EncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"

# Ed25519 (pure).
k = key("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
pub = public(k)
assert isinstance(pub, ed25519.Ed25519PublicKey)
pub.verify(sign(k, "ED25519_SHA_512", MESSAGE), MESSAGE)

# ML-DSA (FIPS 204): RAW, and EXTERNAL_MU, where the caller hands in the 64-byte mu of the
# message, computed here with hashlib: mu = SHAKE256(SHAKE256(pk, 64) || 0x00 || 0x00 || M, 64)
# (empty context). A signature over mu is a signature over the message.
for spec in ["ML_DSA_44", "ML_DSA_65", "ML_DSA_87"]:
    k = key(spec, "SIGN_VERIFY")
    pub = public(k)
    raw_sig = sign(k, "ML_DSA_SHAKE_256", MESSAGE)
    pub.verify(raw_sig, MESSAGE)
    pk = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    tr = hashlib.shake_256(pk).digest(64)
    mu = hashlib.shake_256(tr + b"\x00\x00" + MESSAGE).digest(64)
    pub.verify(sign(k, "ML_DSA_SHAKE_256", mu, "EXTERNAL_MU"), MESSAGE)
    # Verify over mu takes the signature made over the message, and refuses another mu.
    assert kms.verify(
        KeyId=k, Message=mu, MessageType="EXTERNAL_MU", Signature=raw_sig,
        SigningAlgorithm="ML_DSA_SHAKE_256",
    )["SignatureValid"]
    other_mu = hashlib.shake_256(tr + b"\x00\x00" + b"another message").digest(64)
    assert error_code(
        kms.verify, KeyId=k, Message=other_mu, MessageType="EXTERNAL_MU", Signature=raw_sig,
        SigningAlgorithm="ML_DSA_SHAKE_256",
    ) == "KMSInvalidSignatureException"
    # mu is 64 bytes; DIGEST is not an ML-DSA message type.
    for message, message_type in [(mu[:32], "EXTERNAL_MU"), (mu, "DIGEST")]:
        assert error_code(
            kms.sign, KeyId=k, Message=message, MessageType=message_type,
            SigningAlgorithm="ML_DSA_SHAKE_256",
        ) == "ValidationException"

# ECDH: the shared secret equals cryptography's.
k = key("ECC_NIST_P384", "KEY_AGREEMENT")
peer = ec.generate_private_key(ec.SECP384R1())
peer_der = peer.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
shared = kms.derive_shared_secret(KeyId=k, KeyAgreementAlgorithm="ECDH", PublicKey=peer_der)[
    "SharedSecret"
]
assert shared == peer.exchange(ec.ECDH(), public(k))

# Data key pairs: a real pair, the private key sealed under a symmetric key.
wrap = kms.create_key()["KeyMetadata"]["KeyId"]
pair = kms.generate_data_key_pair(KeyId=wrap, KeyPairSpec="ECC_NIST_P256")
priv = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
assert priv.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
) == pair["PublicKey"]
assert kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"])["Plaintext"] == pair[
    "PrivateKeyPlaintext"
]

# HMAC: generate and verify, a wrong message refused.
k = key("HMAC_384", "GENERATE_VERIFY_MAC")
mac = kms.generate_mac(KeyId=k, Message=MESSAGE, MacAlgorithm="HMAC_SHA_384")["Mac"]
assert len(mac) == 48
assert kms.verify_mac(KeyId=k, Message=MESSAGE, Mac=mac, MacAlgorithm="HMAC_SHA_384")["MacValid"]
assert (
    error_code(kms.verify_mac, KeyId=k, Message=b"x", Mac=mac, MacAlgorithm="HMAC_SHA_384")
    == "KMSInvalidMacException"
)

# AWS's validation: KeyUsage is required for every spec but SYMMETRIC_DEFAULT.
assert error_code(kms.create_key, KeySpec="HMAC_256") == "ValidationException"
print("every key type checked with cryptography")
