"""Attested release through boto3, as an enclave app's tooling would do it: an RSA key made with
Python `cryptography`, a document from `ekms attestation mock`, a key policy pinning the app's
image (kms:RecipientAttestation:ImageSha384), and each CiphertextForRecipient opened with
`openssl cms -decrypt` (Python `cryptography` has no RSA-OAEP CMS decryption).

Usage: python3 recipient.py ENDPOINT ACCESS_KEY SECRET_KEY EKMS_BINARY DATA_DIR.
Exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys
import tempfile

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

endpoint, access, secret, ekms, data_dir = sys.argv[1:6]
kms = boto3.client(
    "kms",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id=access,
    aws_secret_access_key=secret,
    config=Config(retries={"max_attempts": 5}),
)
work = tempfile.mkdtemp()
IMAGE = "ab" * 48

private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
key_pem = os.path.join(work, "app.pem")
with open(key_pem, "wb") as f:
    f.write(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
pub_der = os.path.join(work, "app.pub.der")
with open(pub_der, "wb") as f:
    f.write(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def document(image):
    out = os.path.join(work, "doc-" + image[:8])
    subprocess.run(
        [ekms, "attestation", "mock", "--data-dir", data_dir, "--public-key", pub_der,
         "--image-sha384", image, "--out", out],
        check=True,
        capture_output=True,
    )
    with open(out, "rb") as f:
        return f.read()


def opened(envelope):
    path = os.path.join(work, "envelope.der")
    with open(path, "wb") as f:
        f.write(envelope)
    return subprocess.run(
        ["openssl", "cms", "-decrypt", "-inform", "DER", "-in", path, "-inkey", key_pem],
        check=True,
        capture_output=True,
    ).stdout


doc = document(IMAGE)
recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": doc}
policy = {"Version": "2012-10-17", "Statement": [
    {"Sid": "admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
     "Action": ["kms:Encrypt", "kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"],
     "Resource": "*"},
    {"Sid": "enclave", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
     "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
     "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": IMAGE}}},
]}
key = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]

blob = kms.encrypt(KeyId=key, Plaintext=b"for the enclave")["CiphertextBlob"]
out = kms.decrypt(CiphertextBlob=blob, Recipient=recipient)
assert "Plaintext" not in out or not out["Plaintext"], out
assert opened(out["CiphertextForRecipient"]) == b"for the enclave"

out = kms.generate_data_key(KeyId=key, NumberOfBytes=32, Recipient=recipient)
assert "Plaintext" not in out or not out["Plaintext"], out
data_key = opened(out["CiphertextForRecipient"])
assert len(data_key) == 32
again = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], Recipient=recipient)
assert opened(again["CiphertextForRecipient"]) == data_key

out = kms.generate_random(NumberOfBytes=20, Recipient=recipient)
assert len(opened(out["CiphertextForRecipient"])) == 20


def code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "OK"


assert code(lambda: kms.decrypt(CiphertextBlob=blob)) == "AccessDeniedException"
other = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document("cd" * 48)}
assert code(lambda: kms.decrypt(CiphertextBlob=blob, Recipient=other)) == "AccessDeniedException"
bad = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": doc[:-1]}
assert code(lambda: kms.decrypt(CiphertextBlob=blob, Recipient=bad)) == "ValidationException"
print("recipient.py: ok")
