#!/usr/bin/env python3
"""A stand-in for Azure's instance metadata service (IMDS) Scheduled Events, which cannot exist
off Azure. It speaks the real request and response format:

  GET  /metadata/scheduledevents?api-version=2020-07-01   (header Metadata: true)
    -> {"DocumentIncarnation": N, "Events": [{"EventId", "EventType": "Preempt",
        "ResourceType": "VirtualMachine", "Resources": [...], "EventStatus": "Scheduled",
        "NotBefore": "...", "Description": "...", "EventSource": "Platform",
        "DurationInSeconds": -1}]}
  POST /metadata/scheduledevents?api-version=2020-07-01   {"StartRequests": [{"EventId": ...}]}

and refuses what IMDS refuses: a request without `Metadata: true`, or without an api-version,
is 400 with IMDS's error text. One stand-in serves several VMs of one machine: the first path
segment names the VM (/vm-a/metadata/scheduledevents), whose events are read from
FOLDER/<vm>/events.json (a list the test writes; none: no events) and whose acknowledgements
are appended to FOLDER/<vm>/acks.jsonl. DocumentIncarnation counts the changes of that list.

Usage: scheduled_events.py FOLDER; it prints "listening on PORT" once it serves.
"""
import http.server
import json
import os
import sys
import urllib.parse

folder = sys.argv[1]
seen = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def vm_and_checks(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[1:] != ["metadata", "scheduledevents"]:
            self.answer(404, {"error": "Not found"})
            return None
        if self.headers.get("Metadata") != "true":
            self.answer(400, {"error": "Bad request. Required metadata header not specified"})
            return None
        if "api-version" not in urllib.parse.parse_qs(url.query):
            self.answer(400, {"error": "Bad request. api-version was not specified in the request."})
            return None
        return parts[0]

    def do_GET(self):
        vm = self.vm_and_checks()
        if vm is None:
            return
        events = []
        path = os.path.join(folder, vm, "events.json")
        if os.path.exists(path):
            with open(path) as f:
                events = json.load(f)
        text = json.dumps(events, sort_keys=True)
        if seen.get(vm, (None, 0))[0] != text:
            seen[vm] = (text, seen.get(vm, (None, 0))[1] + 1)
        self.answer(200, {"DocumentIncarnation": seen[vm][1], "Events": events})

    def do_POST(self):
        vm = self.vm_and_checks()
        if vm is None:
            return
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            requests = body["StartRequests"]
            ids = [item["EventId"] for item in requests]
        except (ValueError, KeyError, TypeError):
            self.answer(400, {"error": "Bad request. StartRequests were not specified."})
            return
        os.makedirs(os.path.join(folder, vm), exist_ok=True)
        with open(os.path.join(folder, vm, "acks.jsonl"), "a") as f:
            f.write(json.dumps(ids) + "\n")
        self.answer(200)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening on %d" % server.server_address[1], flush=True)
server.serve_forever()
