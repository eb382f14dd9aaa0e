// Package schema embeds the JSON Schema of lgrun graph files. It has no logic:
// spec validates against it, `lgrun schema` prints it.
package schema

import _ "embed"

// The per-kind part of graph.schema.json (node kinds, tool kinds,
// providers and their settings) is generated from the kind declarations of
// package spec; the rest is written by hand. Regenerate after changing
// either:
//
//go:generate sh -c "go run ../cmd/lgrun schema > graph.schema.json.new && mv graph.schema.json.new graph.schema.json"

// Graph is the JSON Schema (draft 2020-12) of a graph file.
//
//go:embed graph.schema.json
var Graph []byte

// GraphURL is the $id of [Graph].
const GraphURL = "https://lgrun.dev/schema/graph.schema.json"

// Test is the JSON Schema of graph test files (*.test.yaml).
//
//go:embed test.schema.json
var Test []byte

// TestURL is the $id of [Test].
const TestURL = "https://lgrun.dev/schema/test.schema.json"
