"""Key material rotation through boto3, as Terraform and compliance scripts use it: enable and
read back the status, rotate on demand to AWS's limit, list the rotations page by page, and
decrypt every ciphertext made under an earlier material.

Usage: python3 rotation.py ENDPOINT ACCESS_KEY SECRET_KEY. Exits non-zero on any failure.
"""
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

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
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise AssertionError("the call succeeded")


key_id = kms.create_key(Description="rotated")["KeyMetadata"]["KeyId"]
arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
kms.create_alias(AliasName="alias/rotated", TargetKeyId=key_id)

# Terraform's read-back: what was set is what is returned.
status = kms.get_key_rotation_status(KeyId=key_id)
assert status["KeyRotationEnabled"] is False, status
kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
status = kms.get_key_rotation_status(KeyId=key_id)
assert status["KeyRotationEnabled"] is True, status
assert status["RotationPeriodInDays"] == 180, status
days = (status["NextRotationDate"].timestamp() - time.time()) / 86400
assert 179.9 < days < 180.1, days
assert "OnDemandRotationStartDate" not in status, status
code, _ = error(kms.enable_key_rotation, KeyId=key_id, RotationPeriodInDays=3000)
assert code == "ValidationException", code

# On demand: every rotation makes a new current material; each ciphertext names its own.
blobs = []
materials = []
for i in range(26):
    if i:
        assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == arn
    material = kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert material not in materials
    materials.append(material)
    blobs.append(kms.encrypt(KeyId="alias/rotated", Plaintext=f"secret {i}".encode())["CiphertextBlob"])
code, message = error(kms.rotate_key_on_demand, KeyId=key_id)
assert code == "LimitExceededException", code
assert message == (
    "The on-demand rotations limit has been reached for the given keyId. "
    f"No more on-demand rotations can be performed for this key: {arn}"
), message

for i, blob in enumerate(blobs):
    out = kms.decrypt(CiphertextBlob=blob)
    assert out["Plaintext"] == f"secret {i}".encode()
    assert out["KeyMaterialId"] == materials[i], (i, out["KeyMaterialId"])
dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
assert dk["KeyMaterialId"] == materials[-1]
re = kms.re_encrypt(CiphertextBlob=blobs[0], DestinationKeyId=key_id)
assert re["SourceKeyMaterialId"] == materials[0] and re["DestinationKeyMaterialId"] == materials[-1]

# The rotations, page by page through boto3's paginator.
pages = kms.get_paginator("list_key_rotations").paginate(KeyId=key_id, PaginationConfig={"PageSize": 7})
rotations = [r for page in pages for r in page["Rotations"]]
assert [r["KeyMaterialId"] for r in rotations] == materials[1:], rotations
assert all(r["RotationType"] == "ON_DEMAND" for r in rotations)
assert all(r["RotationDate"].timestamp() > time.time() - 600 for r in rotations)
everything = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
assert [r["KeyMaterialId"] for r in everything] == materials
assert "RotationDate" not in everything[0]
assert everything[-1]["KeyMaterialState"] == "CURRENT"

# Rotation keeps the automatic schedule, and turning it off reads back.
assert kms.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 180
kms.disable_key_rotation(KeyId=key_id)
assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False

# Keys that cannot rotate get AWS's error.
signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
for fn in (kms.enable_key_rotation, kms.rotate_key_on_demand, kms.list_key_rotations):
    code, _ = error(fn, KeyId=signing)
    assert code == "UnsupportedOperationException", (fn, code)
code, message = error(kms.rotate_key_on_demand, KeyId="11111111-2222-3333-4444-555555555555")
assert code == "NotFoundException", code
print("boto3 rotation: ok")
