"""boto3 against the appliance: byte-identical state-changing calls sent at once are one signed
request to the enclave; the replays are answered with ThrottlingException, which boto3 retries
with a fresh signature, so every call goes through, each creating its own key. A captured
request replayed by hand (no retry, same signature) is refused and changes nothing."""
import sys
import threading

import boto3
import botocore

endpoint, access_key, secret_key = sys.argv[1:4]


def client(max_attempts):
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
    )


kms = client(8)
results = []


def create():
    try:
        out = kms.create_key(Description="identical")
        results.append(("ok", out["KeyMetadata"]["KeyId"], out["ResponseMetadata"]["RetryAttempts"]))
    except botocore.exceptions.ClientError as e:
        results.append(("error", e.response["Error"]["Code"], 0))


threads = [threading.Thread(target=create) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(results)
assert all(r[0] == "ok" for r in results), results
assert len({r[1] for r in results}) == 3, "each call made its own key"

# Without retries, a same-second duplicate gets the replay answer itself.
bare = client(1)
seen = set()
for _ in range(20):
    errors = []

    def once():
        try:
            bare.create_key(Description="no retries")
        except botocore.exceptions.ClientError as e:
            errors.append((e.response["Error"]["Code"], e.response["Error"]["Message"]))

    pair = [threading.Thread(target=once) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join()
    seen.update(errors)
    if errors:
        break
print(seen)
assert any(code == "ThrottlingException" and "already executed" in msg for code, msg in seen), seen
print("identical calls: ok")
