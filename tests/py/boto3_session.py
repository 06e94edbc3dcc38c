"""A boto3 session against a running appliance: every foundation operation and its errors.

Usage: python3 boto3_session.py ENDPOINT ACCESS_KEY SECRET_KEY. Exits non-zero on any failure.
"""
import sys

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
    config=Config(retries={"max_attempts": 3}),
)


def expect_error(code, fn, **kwargs):
    try:
        fn(**kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e}"
        return e.response["Error"]["Message"]
    raise AssertionError(f"expected {code}, call succeeded")


key = kms.create_key(Description="boto3 key", Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyMetadata"]
key_id, arn = key["KeyId"], key["Arn"]
assert key["KeyState"] == "Enabled" and key["KeySpec"] == "SYMMETRIC_DEFAULT"
assert arn == f"arn:aws:kms:us-east-1:111122223333:key/{key_id}"
assert kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id

kms.create_alias(AliasName="alias/boto", TargetKeyId=key_id)
ct = kms.encrypt(KeyId="alias/boto", Plaintext=b"hello boto", EncryptionContext={"ab": "c"})
assert ct["KeyId"] == arn and ct["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
pt = kms.decrypt(CiphertextBlob=ct["CiphertextBlob"], EncryptionContext={"ab": "c"})
assert pt["Plaintext"] == b"hello boto" and pt["KeyId"] == arn
# The canonical context encoding keeps {"ab": "c"} and {"a": "bc"} apart.
expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=ct["CiphertextBlob"], EncryptionContext={"a": "bc"})
expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=b"\x01" * 70)
expect_error("InvalidCiphertextException", kms.decrypt, CiphertextBlob=ct["CiphertextBlob"][:-1], EncryptionContext={"ab": "c"})

other = kms.create_key()["KeyMetadata"]["KeyId"]
expect_error("IncorrectKeyException", kms.decrypt, CiphertextBlob=ct["CiphertextBlob"], KeyId=other, EncryptionContext={"ab": "c"})
re = kms.re_encrypt(CiphertextBlob=ct["CiphertextBlob"], SourceEncryptionContext={"ab": "c"}, DestinationKeyId=other)
assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"hello boto"

dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
assert len(dk["Plaintext"]) == 32
assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
wp = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=16)
assert "Plaintext" not in wp
assert len(kms.generate_random(NumberOfBytes=64)["Plaintext"]) == 64
msg = expect_error("ValidationException", kms.generate_random, NumberOfBytes=1025)
assert msg == "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024", msg
msg = expect_error("ValidationException", kms.encrypt, KeyId=key_id, Plaintext=b"x" * 4097)
assert "less than or equal to 4096" in msg

kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "env", "TagValue": "prod"}])
kms.untag_resource(KeyId=key_id, TagKeys=["team"])
assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "env", "TagValue": "prod"}]
assert expect_error("TagException", kms.tag_resource, KeyId=key_id, Tags=[{"TagKey": "aws:x", "TagValue": "1"}]) == "Tags beginning with aws: are reserved"
kms.update_key_description(KeyId=key_id, Description="renamed")

kms.update_alias(AliasName="alias/boto", TargetKeyId=other)
aliases = {a["AliasName"]: a for a in kms.list_aliases()["Aliases"]}
assert aliases["alias/boto"]["TargetKeyId"] == other
kms.delete_alias(AliasName="alias/boto")
msg = expect_error("NotFoundException", kms.describe_key, KeyId="alias/boto")
assert msg == "Alias arn:aws:kms:us-east-1:111122223333:alias/boto is not found.", msg
msg = expect_error("NotFoundException", kms.describe_key, KeyId="fake-key-id")
assert msg == "Invalid keyId 'fake-key-id'", msg

# Paginator over ListKeys with Limit=1 visits every key exactly once.
seen = [k["KeyId"] for page in kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 1}) for k in page["Keys"]]
assert sorted(seen) == sorted([key_id, other]), seen

kms.disable_key(KeyId=key_id)
assert expect_error("DisabledException", kms.encrypt, KeyId=key_id, Plaintext=b"x").endswith("is disabled.")
kms.enable_key(KeyId=key_id)
d = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
assert d["KeyState"] == "PendingDeletion" and d["PendingWindowInDays"] == 7
expect_error("KMSInvalidStateException", kms.encrypt, KeyId=key_id, Plaintext=b"x")
kms.cancel_key_deletion(KeyId=key_id)
assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
policy = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
assert '"AWS" : "arn:aws:iam::' in policy, policy
expect_error("UnsupportedOperationException", kms.describe_custom_key_stores)

bad = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access, aws_secret_access_key="x" * 40)
expect_error("InvalidSignatureException", bad.list_keys)
print("boto3 session: ok")
