"""A conformance gateway built from the official Alipay Python SDK's own code:
it checks request signatures with the SDK's get_sign_content + verify_with_rsa,
refuses biz_content field names the SDK's model classes do not know, and signs
its answers with the SDK's sign_with_rsa2. cardform's client must pass it.

Usage: python3 sdk_gateway.py <app_public_oneline> <gateway_private_pkcs1_oneline>
Prints "listening on http://127.0.0.1:<port>/gateway.do", then serves.
"""
import email.parser
import importlib
import json
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa

APP_PUBLIC = open(sys.argv[1]).read().strip()
GATEWAY_PRIVATE = open(sys.argv[2]).read().strip()


def model_class(method):
    name = "".join(p.capitalize() for p in method.split(".")) + "Model"
    module = importlib.import_module("alipay.aop.api.domain." + name)
    return getattr(module, name)


def unknown_fields(obj, data, path=""):
    """Keys of `data` that the SDK model `obj` (built from it) has no property for."""
    out = []
    for key, value in data.items():
        if not isinstance(getattr(type(obj), key, None), property):
            out.append(path + key)
            continue
        sub = getattr(obj, key)
        if isinstance(value, dict) and hasattr(sub, "to_alipay_dict"):
            out += unknown_fields(sub, value, path + key + ".")
        elif isinstance(value, list) and isinstance(sub, list):
            for i, (x, y) in enumerate(zip(value, sub)):
                if isinstance(x, dict) and hasattr(y, "to_alipay_dict"):
                    out += unknown_fields(y, x, f"{path}{key}[{i}].")
    return out


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, method, node):
        content = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        sign = sign_with_rsa2(GATEWAY_PRIVATE, content, "utf-8")
        name = method.replace(".", "_") + "_response"
        body = ('{"%s":%s,"sign":"%s"}' % (name, content, sign)).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ctype = self.headers.get("Content-Type", "")
        files = {}
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
            for part in msg.get_payload():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    files[name] = part.get_payload(decode=True)
                else:
                    params[name] = part.get_payload(decode=True).decode("utf-8")
        else:
            params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        method = params.get("method", "")
        sign = params.pop("sign", "")
        content = get_sign_content({k: v for k, v in params.items() if v})
        try:
            ok = verify_with_rsa(APP_PUBLIC, content.encode("utf-8"), sign)
        except Exception:
            ok = False
        if not ok:
            return self.answer(method, {"code": "40002", "msg": "Invalid Arguments",
                                        "sub_code": "isv.invalid-signature", "sub_msg": "SDK verification failed"})
        if "biz_content" in params:
            data = json.loads(params["biz_content"])
            cls = model_class(method)
            unknown = unknown_fields(cls.from_alipay_dict(data), data)
            if unknown:
                return self.answer(method, {"code": "40002", "msg": "Invalid Arguments",
                                            "sub_code": "isv.invalid-parameter",
                                            "sub_msg": "unknown to the SDK model: " + ", ".join(unknown)})
        node = {"code": "10000", "msg": "Success"}
        if method == "alipay.offline.material.image.upload":
            if "image_content" not in files:
                node = {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.upload-fail", "sub_msg": "no file"}
            else:
                node["image_id"] = uuid.uuid4().hex
                node["image_url"] = "https://example.invalid/" + node["image_id"]
        elif method.endswith("template.create") or method.endswith("template.modify"):
            node["template_id"] = "20240520000000001234567000300123"
        elif method.endswith("benefit.create"):
            node["benefit_id"] = "B0000000000000000001"
        elif method.endswith("activateurl.apply"):
            node["apply_card_url"] = "https%3A%2F%2Fmemberprod.alipay.com%2Fx"
        self.answer(method, node)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening on http://127.0.0.1:%d/gateway.do" % server.server_address[1], flush=True)
server.serve_forever()
