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
//
// # Kinds
//
// A [Node] holds the settings every kind has; the rest is its kind's
// [NodeConfig] (an [*LLMConfig] for an llm node, and so on). The language's
// node kinds, tool kinds and providers are declared in tables of
// [NodeKindDecl], [ToolKindDecl] and [ProviderDecl]; the decoder (each
// built-in declaration carries its decode function), its key checks and
// the per-kind part of the JSON Schema (with each setting's type and doc)
// come from them. A [Registry] adds custom node kinds, tool kinds, Go
// tools and providers the same way; load with [Options].Registry to accept
// them.
// Implementations live elsewhere: package runtime runs node kinds by name,
// package builtin keeps an Environment that registers both sides.
package spec
