"""GetKeyLastUsage through boto3: a use is reported with the request id boto3 was given, every
tracked operation counts, ReEncrypt counts for both keys, failures and metadata reads do not,
and aliases are refused as AWS refuses them.

Usage: python3 last_usage.py ENDPOINT ACCESS_KEY SECRET_KEY. Exits non-zero on any failure.
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
    config=Config(retries={"max_attempts": 5}),
)


def last(key_id):
    out = kms.get_key_last_usage(KeyId=key_id)
    assert out["KeyId"] == key_id, out
    assert out["TrackingStartDate"] == out["KeyCreationDate"], out
    return out.get("KeyLastUsage")


def check(key_id, operation, response):
    usage = last(key_id)
    assert usage is not None, key_id
    assert usage["Operation"] == operation, (usage, operation)
    assert usage["KmsRequestId"] == response["ResponseMetadata"]["RequestId"], (usage, response)
    assert "CloudTrailEventId" not in usage, usage


a = kms.create_key()["KeyMetadata"]["KeyId"]
b = kms.create_key()["KeyMetadata"]["KeyId"]
assert last(a) is None

out = kms.encrypt(KeyId=a, Plaintext=b"x")
check(a, "Encrypt", out)
blob = out["CiphertextBlob"]
check(a, "Decrypt", kms.decrypt(CiphertextBlob=blob))
check(a, "GenerateDataKey", kms.generate_data_key(KeyId=a, KeySpec="AES_256"))
check(
    a,
    "GenerateDataKeyWithoutPlaintext",
    kms.generate_data_key_without_plaintext(KeyId=a, NumberOfBytes=16),
)
check(
    a,
    "GenerateDataKeyPair",
    kms.generate_data_key_pair(KeyId=a, KeyPairSpec="ECC_NIST_P256"),
)
out = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=b)
check(a, "ReEncrypt", out)
check(b, "ReEncrypt", out)

# Metadata reads and failed operations are no use of the key.
kms.describe_key(KeyId=a)
kms.get_key_rotation_status(KeyId=a)
try:
    kms.decrypt(CiphertextBlob=blob, EncryptionContext={"not": "bound"})
    raise AssertionError("decrypt with a wrong context succeeded")
except ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidCiphertextException", e.response
check(a, "ReEncrypt", out)

# Sign and Verify; a Verify that fails does not count.
s = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
sig = kms.sign(KeyId=s, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
check(s, "Sign", sig)
ok = kms.verify(KeyId=s, Message=b"m", Signature=sig["Signature"], SigningAlgorithm="ECDSA_SHA_256")
check(s, "Verify", ok)
try:
    kms.verify(KeyId=s, Message=b"other", Signature=sig["Signature"], SigningAlgorithm="ECDSA_SHA_256")
    raise AssertionError("a wrong signature verified")
except ClientError as e:
    assert e.response["Error"]["Code"] == "KMSInvalidSignatureException", e.response
check(s, "Verify", ok)

# HMAC keys.
h = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
mac = kms.generate_mac(KeyId=h, Message=b"m", MacAlgorithm="HMAC_SHA_256")
check(h, "GenerateMac", mac)
check(h, "VerifyMac", kms.verify_mac(KeyId=h, Message=b"m", Mac=mac["Mac"], MacAlgorithm="HMAC_SHA_256"))

# Key id or key ARN only, as AWS.
arn = kms.describe_key(KeyId=a)["KeyMetadata"]["Arn"]
assert kms.get_key_last_usage(KeyId=arn)["KeyId"] == a
kms.create_alias(AliasName="alias/last-usage", TargetKeyId=a)
for bad in ["alias/last-usage", arn.split(":key/")[0] + ":alias/last-usage"]:
    try:
        kms.get_key_last_usage(KeyId=bad)
        raise AssertionError("an alias was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NotFoundException", e.response
print("ok")
