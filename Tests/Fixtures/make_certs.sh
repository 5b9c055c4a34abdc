#!/usr/bin/env bash
# Create throw-away TLS material for metrics-proxy integration tests.
#
# Usage: make_certs.sh OUTDIR
#
# Creates in OUTDIR (EC P-256 keys, PEM, valid 2 days):
#   ca.pem / ca.key               self-signed test CA
#   server.pem / server.key       signed by ca, SAN DNS:localhost, IP:127.0.0.1
#   wronghost.pem / wronghost.key signed by ca, SAN DNS:wrong.example only
#   otherca.pem / otherca.key     a second, unrelated self-signed CA
#   untrusted.pem / untrusted.key signed by otherca, SAN DNS:localhost, IP:127.0.0.1
# Works with OpenSSL 3.0+.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

OUT=$1
mkdir -p "$OUT"
DAYS=2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Run a command quietly; show its output only if it fails.
q() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "make_certs.sh: command failed: $*" >&2
        return 1
    fi
}

serial() {
    # 16 random bytes, top bit cleared so the serial is positive and <= 20 octets
    printf '0x%s' "$(openssl rand -hex 16 | sed 's/^./7/')"
}

# make_ca NAME CN
make_ca() {
    local name=$1 cn=$2
    q openssl req -x509 -new \
        -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$OUT/$name.key" -out "$OUT/$name.pem" \
        -days "$DAYS" -sha256 -set_serial "$(serial)" \
        -subj "/O=metrics-proxy tests/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
}

# make_leaf NAME CA CN SAN
make_leaf() {
    local name=$1 ca=$2 cn=$3 san=$4
    cat > "$WORK/$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=$san
EXT
    q openssl req -new \
        -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$OUT/$name.key" -out "$WORK/$name.csr" \
        -subj "/O=metrics-proxy tests/CN=$cn"
    q openssl x509 -req -in "$WORK/$name.csr" \
        -CA "$OUT/$ca.pem" -CAkey "$OUT/$ca.key" -set_serial "$(serial)" \
        -days "$DAYS" -sha256 \
        -extfile "$WORK/$name.ext" \
        -out "$OUT/$name.pem"
}

make_ca ca "metrics-proxy test CA"
make_leaf server ca localhost "DNS:localhost,IP:127.0.0.1"
make_leaf wronghost ca wrong.example "DNS:wrong.example"

make_ca otherca "metrics-proxy other test CA"
make_leaf untrusted otherca localhost "DNS:localhost,IP:127.0.0.1"

chmod 600 "$OUT"/*.key

# Sanity checks
q openssl verify -CAfile "$OUT/ca.pem" "$OUT/server.pem" "$OUT/wronghost.pem"
q openssl verify -CAfile "$OUT/otherca.pem" "$OUT/untrusted.pem"
