package main

// The container image is FROM scratch: no /etc/ssl/certs and no
// /usr/share/zoneinfo. The binary needs root certificates only to verify an
// https:// --alert-webhook, so it carries Mozilla's set, used only when the
// system offers none (a machine with its own store keeps using that one).
// It needs no time-zone data: periods, log entries and usage are all UTC,
// and nothing loads a location.
import _ "golang.org/x/crypto/x509roots/fallback"
