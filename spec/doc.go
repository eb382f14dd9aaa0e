// Package spec is lgrun's graph language: it parses a YAML graph file with
// positions, validates it against the JSON Schema in package schema, checks
// its semantics (references, reachability, reducers, expression types), and
// produces an immutable, compiled [Graph] that package runtime executes.
//
// The pipeline is Load (bytes → yaml.Node), schema validation (structure),
// decode (yaml.Node → AST with a [Pos] on every element) and Check (AST →
// [Graph]). Every problem is reported as an [Error] in an [ErrorList], all of
// them at once, sorted by position.
//
// Expressions are expr-lang programs compiled against an environment typed
// from the state schema, so a type error or an unknown field is found before
// anything runs. Text settings (prompts, an http tool's url) are a
// [Template]: text with {{ expression }} interpolations of such expressions,
// rendered by [Template.Render] as [RenderText] documents.
package spec
