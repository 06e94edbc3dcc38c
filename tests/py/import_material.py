"""Imported key material through boto3, wrapped exactly as AWS's developer guide tells users to
wrap it: `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256`
(RSAES_OAEP_SHA_256), and RSA-OAEP of an AES-256 key plus AES key wrap with padding (RFC 5649,
RSA_AES_KEY_WRAP_SHA_256) with Python's `cryptography`. Results are checked independently:
HMACs with Python's `hmac`, signatures with `cryptography` under the imported public key.

Usage: python3 import_material.py ENDPOINT ACCESS_KEY SECRET_KEY. Exits non-zero on failure.
"""
import hashlib
import hmac
import os
import shutil
import subprocess
import sys
import tempfile

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

endpoint, access, secret = sys.argv[1:4]
kms = boto3.client(
    "kms",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=access,
    aws_secret_access_key=secret,
    config=Config(retries={"max_attempts": 5}),
)


def error(fn, **kwargs):
    try:
        fn(**kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


def openssl_oaep_sha256(public_der, material):
    """The AWS guide's commands, with files, as a user runs them."""
    with tempfile.TemporaryDirectory() as d:
        pub, plain, out = (os.path.join(d, n) for n in ("pub.der", "m.bin", "w.bin"))
        open(pub, "wb").write(public_der)
        open(plain, "wb").write(material)
        subprocess.run(
            ["openssl", "pkeyutl", "-encrypt", "-in", plain, "-out", out,
             "-inkey", pub, "-keyform", "DER", "-pubin",
             "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256"],
            check=True,
        )
        return open(out, "rb").read()


def cryptography_oaep_sha256(public_der, material):
    public = serialization.load_der_public_key(public_der)
    return public.encrypt(
        material,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )


def rsa_aes_key_wrap_sha256(public_der, material):
    aes = os.urandom(32)
    return cryptography_oaep_sha256(public_der, aes) + aes_key_wrap_with_padding(aes, material)


def import_material(key_id, material, algorithm="RSAES_OAEP_SHA_256", **extra):
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_2048"
    )
    if algorithm == "RSAES_OAEP_SHA_256":
        wrap = openssl_oaep_sha256 if shutil.which("openssl") else cryptography_oaep_sha256
    else:
        wrap = rsa_aes_key_wrap_sha256
    wrapped = wrap(params["PublicKey"], material)
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
        **extra,
    )


# Symmetric: pending import, imported with openssl's OAEP, encrypt and decrypt, delete, restore.
key = kms.create_key(Origin="EXTERNAL", Description="imported")["KeyMetadata"]
assert key["KeyState"] == "PendingImport", key
key_id = key["KeyId"]
assert error(kms.encrypt, KeyId=key_id, Plaintext=b"x") == "KMSInvalidStateException"
material = os.urandom(32)
out = import_material(key_id, material)
assert len(out["KeyMaterialId"]) == 64, out
meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
assert meta["KeyState"] == "Enabled" and meta["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
kms.delete_imported_key_material(KeyId=key_id)
assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
assert error(kms.decrypt, CiphertextBlob=blob) == "KMSInvalidStateException"
assert error(import_material, key_id=key_id, material=os.urandom(32)) == (
    "IncorrectKeyMaterialException"
)
import_material(key_id, material, "RSA_AES_KEY_WRAP_SHA_256")
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"

# A second material, pending until RotateKeyOnDemand; the old ciphertext still decrypts.
second = import_material(key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
kms.rotate_key_on_demand(KeyId=key_id)
assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == second
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"

# AWS_KMS keys take no imported material.
aws_key = kms.create_key()["KeyMetadata"]["KeyId"]
assert error(
    kms.get_parameters_for_import,
    KeyId=aws_key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048",
) == "UnsupportedOperationException"

# HMAC_256 with 48 bytes of material, by AES key wrap: GenerateMac equals Python's hmac.
mac_key = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
mac_key = mac_key["KeyMetadata"]["KeyId"]
mac_material = os.urandom(48)
import_material(mac_key, mac_material, "RSA_AES_KEY_WRAP_SHA_256")
mac = kms.generate_mac(KeyId=mac_key, Message=b"message", MacAlgorithm="HMAC_SHA_256")["Mac"]
assert mac == hmac.new(mac_material, b"message", hashlib.sha256).digest()

# ECC_NIST_P384 made by `cryptography`: KMS signatures verify under our own public key.
ec_key = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")
ec_key = ec_key["KeyMetadata"]["KeyId"]
private = ec.generate_private_key(ec.SECP384R1())
pkcs8 = private.private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
import_material(ec_key, pkcs8, "RSA_AES_KEY_WRAP_SHA_256")
sig = kms.sign(KeyId=ec_key, Message=b"message", SigningAlgorithm="ECDSA_SHA_384")["Signature"]
private.public_key().verify(sig, b"message", ec.ECDSA(hashes.SHA384()))
got = serialization.load_der_public_key(kms.get_public_key(KeyId=ec_key)["PublicKey"])
assert got.public_numbers() == private.public_key().public_numbers()

print("ok")
