package checkpoint

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
)

// The statements of a step's commit (BEGIN IMMEDIATE, the head's move,
// the checkpoint's insert, COMMIT) run on the writer connection's driver
// connection, through (*sql.Conn).Raw, rather than as database/sql
// statements: database/sql would convert and copy every bound value
// (33 a commit) into a fresh []driver.NamedValue, box its result twice,
// and take its locks per statement, and BEGIN and COMMIT as plain
// ExecContext calls are parsed anew by SQLite on every commit. Here the
// statements are prepared once per handle, their values are bound from
// one reused slice, and the insert binds and steps in one cgo crossing
// (see [SQLite.rawRun]). The statements are the same SQL on the same
// connection, so nothing else changes: SQLite's errors come back as the
// same sqlite3.Error values (see [SQLite.describe]).

// rawStmt is a statement prepared on the writer connection's driver
// connection. Use it only inside (*sql.Conn).Raw of s.wconn, with the
// write lock held.
type rawStmt struct {
	q  string
	st driver.Stmt
}

// rawStmts are the writer connection's driver statements.
type rawStmts struct {
	begin, commit    rawStmt
	dataVersion      rawStmt
	insert, moveHead rawStmt
	moveFollowing    rawStmt
	newThread        rawStmt
}

// prepareRaw prepares the transaction statements on the writer
// connection; with schema, the table statements too (once the tables
// exist in this layout).
func (s *SQLite) prepareRaw(ctx context.Context, schema bool) error {
	r := &s.raw
	list := []*rawStmt{&r.begin, &r.commit, &r.dataVersion}
	if schema {
		list = append(list, &r.insert, &r.moveHead, &r.moveFollowing, &r.newThread)
	}
	return s.wconn.Raw(func(dc any) error {
		pc, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return fmt.Errorf("sqlite driver connection %T cannot prepare statements", dc)
		}
		for _, st := range list {
			if st.st != nil {
				continue
			}
			p, err := pc.PrepareContext(ctx, st.q)
			if err != nil {
				return err
			}
			_, canExec := p.(driver.StmtExecContext)
			_, canQuery := p.(driver.StmtQueryContext)
			if !canExec || !canQuery {
				p.Close()
				return fmt.Errorf("sqlite driver statement %T cannot run with a context", p)
			}
			st.st = p
		}
		return nil
	})
}

// closeRaw closes the driver statements (before the connection: SQLite
// keeps a connection with open statements, and its WAL, open).
func (s *SQLite) closeRaw(wconn *sql.Conn) {
	r := &s.raw
	wconn.Raw(func(any) error {
		for _, st := range []*rawStmt{&r.begin, &r.commit, &r.dataVersion, &r.insert, &r.moveHead, &r.moveFollowing, &r.newThread} {
			if st.st != nil {
				st.st.Close()
				st.st = nil
			}
		}
		return nil
	})
}

var errRawStmt = errors.New("checkpoint database closed (statement not prepared)")

// rawExec runs st with args on the writer connection and returns the
// number of rows it changed.
func (s *SQLite) rawExec(ctx context.Context, st *rawStmt, args []driver.NamedValue) (int64, error) {
	var n int64
	err := s.wconn.Raw(func(any) error {
		// st.st is read here, under the driver connection's lock that
		// closeRaw also holds: a Close racing a write (a lease release's
		// timer, say) makes the write fail, not crash.
		if st.st == nil {
			return errRawStmt
		}
		res, err := st.st.(driver.StmtExecContext).ExecContext(ctx, args)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// rawRun runs st, a statement that returns no rows, with args on the
// writer connection, through the driver's query path: go-sqlite3 binds
// the values and takes the first step in one cgo crossing (its exec path
// crosses once per value, and allocates its result), and closing the
// rows resets the statement. Its changes are not counted: use it for
// statements that either do what they say or fail (an insert). (BEGIN
// and COMMIT go through rawExec: the query path allocates more bytes for
// them, and is no faster.)
func (s *SQLite) rawRun(ctx context.Context, st *rawStmt, args []driver.NamedValue) error {
	return s.wconn.Raw(func(any) error {
		if st.st == nil {
			return errRawStmt
		}
		rows, err := st.st.(driver.StmtQueryContext).QueryContext(ctx, args)
		if err != nil {
			return err
		}
		return rows.Close()
	})
}

// argList is a reused list of the values bound to one statement (see
// [SQLite.moveArgs]). It also keeps, boxed, the strings the last use bound
// at each position: a run's commits bind mostly the same strings (the
// thread, its status and graph, the source, the next nodes), and boxing
// a string as a driver.Value allocates.
type argList struct {
	vals []driver.NamedValue
	last []driver.Value
}

// reset empties the list for n values.
func (a *argList) reset(n int) {
	if cap(a.vals) < n {
		a.vals = make([]driver.NamedValue, 0, n)
	}
	a.vals = a.vals[:0]
}

// add binds v at the next position.
func (a *argList) add(v driver.Value) {
	a.vals = append(a.vals, driver.NamedValue{Ordinal: len(a.vals) + 1, Value: v})
}

// str binds v at the next position.
func (a *argList) str(v string) { a.strAs(v, len(a.vals)) }

// strAs binds v at the next position, as the string the last use bound
// at position i when it is the same (a commit's expected head is the
// head the one before it bound).
func (a *argList) strAs(v string, i int) {
	if i < len(a.last) {
		if old, ok := a.last[i].(string); ok && old == v {
			a.add(a.last[i])
			return
		}
	}
	a.add(v)
}

// done keeps the strings bound for the next use and drops the other
// values, so that the list does not keep them alive.
func (a *argList) done() {
	a.last = a.last[:0]
	for i := range a.vals {
		v := a.vals[i].Value
		if _, ok := v.(string); !ok {
			v = nil
		}
		a.last = append(a.last, v)
		a.vals[i].Value = nil
	}
	a.vals = a.vals[:0]
}

// nullInt is the driver value of a nullable integer column.
func nullInt(v sql.NullInt64) driver.Value {
	if !v.Valid {
		return nil
	}
	return v.Int64
}
