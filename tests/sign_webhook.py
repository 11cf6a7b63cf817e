"""Signs a webhook the way the provider does, with the provider's own library: the independent
reference the inbound tests sign their requests with (tests/api/inbound.rs).

    sign_webhook.py twilio AUTH_TOKEN URL PARAMS_JSON     -> X-Twilio-Signature
    sign_webhook.py standard WHSEC_SECRET ID UNIX_SECS BODY -> webhook-signature
    sign_webhook.py mailgun SIGNING_KEY TIMESTAMP TOKEN      -> signature.signature (hex)
    sign_webhook.py sendgrid-key PEM_OUT                     -> the verification key (base64 DER);
                                                                the private key goes to PEM_OUT
    sign_webhook.py sendgrid PEM TIMESTAMP BODY              -> X-Twilio-Email-Event-Webhook-Signature

Mailgun documents its signature as Python's hmac over timestamp + token; SendGrid's Event Webhook
as ECDSA P-256 with SHA-256 over timestamp + body, base64 DER (signed here with `cryptography`).
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
else:
    sys.exit(f"unknown kind {kind}")
