//go:build tools

// Package tools pins the LiveKit server that the tests, the benchmarks and `widgets serve --demo` run:
// `make livekit` builds github.com/livekit/livekit-server/cmd/server at the version go.mod requires,
// with every module checked against go.sum.
package tools

import _ "github.com/livekit/livekit-server/cmd/server"
