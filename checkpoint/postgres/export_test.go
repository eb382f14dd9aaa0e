package postgres

// DecodeDelta is decodeDelta, for the tests of package postgres_test.
var DecodeDelta = decodeDelta
