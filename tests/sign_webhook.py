"""Signs a webhook the way the provider does, with the provider's own library: the independent
reference the inbound tests sign their requests with (tests/api/inbound.rs).

    sign_webhook.py twilio AUTH_TOKEN URL PARAMS_JSON     -> X-Twilio-Signature
    sign_webhook.py standard WHSEC_SECRET ID UNIX_SECS BODY -> webhook-signature
    sign_webhook.py mailgun SIGNING_KEY TIMESTAMP TOKEN      -> signature.signature (hex)
    sign_webhook.py sendgrid-key PEM_OUT                     -> the verification key (base64 DER);
                                                                the private key goes to PEM_OUT
    sign_webhook.py sendgrid PEM TIMESTAMP BODY              -> X-Twilio-Email-Event-Webhook-Signature
    sign_webhook.py sns-cert DIR                             -> writes DIR/ca.pem, DIR/signing.pem
                                                                (issued by the CA) and DIR/signing.key
    sign_webhook.py sns KEY VERSION MESSAGE_JSON             -> the message's Signature

Mailgun documents its signature as Python's hmac over timestamp + token; SendGrid's Event Webhook
as ECDSA P-256 with SHA-256 over timestamp + body, base64 DER (signed here with `cryptography`).
Amazon SNS signs with RSA PKCS#1 v1.5 (SHA-1 for SignatureVersion 1, SHA-256 for 2) over the
message's fields as "Name\nValue\n", in the order AWS's "Verifying the signatures of Amazon SNS
messages" gives; the string is built here from that page, not from suppressd's code.
"""

import datetime
import json
import sys

kind = sys.argv[1]
if kind == "twilio":
    from twilio.request_validator import RequestValidator

    token, url, params = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print(RequestValidator(token).compute_signature(url, params))
elif kind == "standard":
    from standardwebhooks.webhooks import Webhook

    secret, msg_id, secs, body = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    at = datetime.datetime.fromtimestamp(secs, tz=datetime.timezone.utc)
    print(Webhook(secret).sign(msg_id, at, body))
elif kind == "mailgun":
    import hashlib
    import hmac

    key, timestamp, token = sys.argv[2], sys.argv[3], sys.argv[4]
    print(hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest())
elif kind == "sendgrid-key":
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    with open(sys.argv[2], "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    print(base64.b64encode(public).decode())
elif kind == "sendgrid":
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with open(sys.argv[2], "rb") as pem:
        key = serialization.load_pem_private_key(pem.read(), None)
    timestamp, body = sys.argv[3], sys.argv[4]
    signature = key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    print(base64.b64encode(signature).decode())
elif kind == "sns-cert":
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    out = sys.argv[2]
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("suppressd test CA"))
        .issuer_name(name("suppressd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("sns.us-east-1.amazonaws.com"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    with open(os.path.join(out, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(out, "signing.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(out, "signing.key"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
elif kind == "sns":
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    with open(sys.argv[2], "rb") as pem:
        key = serialization.load_pem_private_key(pem.read(), None)
    version, message = sys.argv[3], json.loads(sys.argv[4])
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    signed = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(signed.encode(), padding.PKCS1v15(), digest)
    print(base64.b64encode(signature).decode())
else:
    sys.exit(f"unknown kind {kind}")
