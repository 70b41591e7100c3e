// Node's smtp-server as a column of e2e.py: every message read to its end and dropped.
//
// Run: NODE_PATH=benchmarks/.node/node_modules node benchmarks/node_sink.js [--lmtp] [--cert PEM --key PEM]
// [--port N]. Listens on 127.0.0.1 (port 0 picks a free one), prints "READY <port>" once it accepts
// connections and serves until it is killed. Same settings as the Python servers in servers.py: no reverse
// lookup, no AUTH, STARTTLS only with --cert/--key, no size limit, no logging.
"use strict";

const fs = require("fs");
const { SMTPServer } = require("smtp-server");

function option(name) {
    const at = process.argv.indexOf(name);
    return at >= 0 ? process.argv[at + 1] : undefined;
}

const lmtp = process.argv.includes("--lmtp");
const cert = option("--cert");
const key = option("--key");
const disabled = ["AUTH"];
if (!cert) {
    disabled.push("STARTTLS");
}

const settings = {
    name: "bench.test",
    lmtp,
    authOptional: true,
    disabledCommands: disabled,
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
        stream.on("data", () => {});
        stream.on("end", () => {
            if (lmtp) {
                callback(null, session.envelope.rcptTo.map(() => "Ok"));
            } else {
                callback(null, "Ok");
            }
        });
    },
};
if (cert) {
    settings.cert = fs.readFileSync(cert);
    settings.key = fs.readFileSync(key);
}

const server = new SMTPServer(settings);
server.on("error", (err) => {
    // A client that drops its connection is no reason to stop; anything else is printed.
    if (err.code !== "ECONNRESET" && err.code !== "EPIPE") {
        console.error(err);
    }
});
server.listen(Number(option("--port") || 0), "127.0.0.1", () => {
    process.stdout.write(`READY ${server.server.address().port}\n`);
});
