package wire

import (
	"errors"
	"fmt"
	"math"
)

// A body is a msgpack array of two elements, [type, payload]. The payload is
// a map whose keys are small unsigned integers, 1, 2, 3, ... in the order the
// fields of the message's struct are declared; a slice of structs is an array
// of such maps. PROTOCOL.md describes every message.
//
// Append writes keys in ascending order, integers in their smallest form and
// leaves out fields holding the zero value, so equal messages encode to equal
// bytes. Decode accepts any integer form, skips keys it does not know and
// reads nil or an absent key as the zero value.

// ErrMalformed is wrapped by the errors Decode returns for a body that is not
// a well-formed message. Such an error names the message and field, as in
// "wire: malformed message: DeltaBatch.Entries[3].Class: want str, got uint".
var ErrMalformed = errors.New("wire: malformed message")

// ErrUnknownType is wrapped by the error Decode returns for a body whose type
// this version does not know, as in "wire: unknown message type 42". The
// body is otherwise unchecked; a frame Reader is still in step after it.
var ErrUnknownType = errors.New("wire: unknown message type")

// Append appends the body of m to dst and returns the extended slice. m must
// be a non-nil pointer to one of this package's message types; anything else
// is a programming error and panics.
func Append(dst []byte, m Message) []byte {
	b, ok := appendBody(dst, m)
	if !ok {
		panic(fmt.Sprintf("wire: Append of unsupported message type %T", m))
	}
	return b
}

// appendBody is Append, reporting an unsupported type instead of panicking.
func appendBody(b []byte, m Message) ([]byte, bool) {
	switch m := m.(type) {
	case *Hello:
		return appendHello(append(b, mpFixarray|2, byte(TypeHello)), m), true
	case *Welcome:
		return appendWelcome(append(b, mpFixarray|2, byte(TypeWelcome)), m), true
	case *DeltaBatch:
		return appendDeltaBatch(append(b, mpFixarray|2, byte(TypeDeltaBatch)), m), true
	case *FullState:
		return appendFullState(append(b, mpFixarray|2, byte(TypeFullState)), m), true
	case *Ack:
		return appendAck(append(b, mpFixarray|2, byte(TypeAck)), m), true
	case *TenantState:
		return appendTenantState(append(b, mpFixarray|2, byte(TypeTenantState)), m), true
	case *Redirect:
		return appendRedirect(append(b, mpFixarray|2, byte(TypeRedirect)), m), true
	case *Error:
		return appendError(append(b, mpFixarray|2, byte(TypeError)), m), true
	case *Ping:
		return appendNonce(append(b, mpFixarray|2, byte(TypePing)), m.Nonce), true
	case *Pong:
		return appendNonce(append(b, mpFixarray|2, byte(TypePong)), m.Nonce), true
	case *GrantAsk:
		return appendGrantAsk(append(b, mpFixarray|2, byte(TypeGrantAsk)), m), true
	case *Grant:
		return appendGrant(append(b, mpFixarray|2, byte(TypeGrant)), m), true
	case *Recall:
		return appendRecall(append(b, mpFixarray|2, byte(TypeRecall)), m), true
	}
	return b, false
}

// Decode decodes one body. It returns a pointer to the message's struct
// (*Hello, *DeltaBatch, ...), which shares no memory with body. Errors wrap
// ErrMalformed or ErrUnknownType.
func Decode(body []byte) (Message, error) {
	d := decoder{b: body}
	return d.decode()
}

// A Decoder decodes bodies like Decode, with two economies for a caller
// that decodes many batches in turn (the state machine): the Entries of a
// DeltaBatch it returns reuse the memory of the previous one's, so they are
// valid only until its next Decode; and a tenant id the caller knows is the
// caller's string, not a new one, with the caller's handle on the tenant
// (Known). A Decoder is not safe for concurrent use.
type Decoder struct {
	// Intern, if set, looks a tenant id up among those the caller knows:
	// it returns the id as the caller holds it and the caller's handle on
	// the tenant, or a nil handle when it knows none.
	Intern  func(id []byte) (string, any)
	entries []DeltaEntry
	known   []any
}

// Decode decodes one body (see Decoder).
func (dc *Decoder) Decode(body []byte) (Message, error) {
	d := decoder{b: body, reuse: true, entries: dc.entries, knownOf: dc.known[:0], intern: dc.Intern}
	m, err := d.decode()
	if cap(d.entries) > cap(dc.entries) {
		dc.entries = d.entries[:0]
	}
	dc.known = d.knownOf
	return m, err
}

// Known returns the handle Intern gave for the tenant of entry i of the
// DeltaBatch decoded last, nil when Intern knew none.
func (dc *Decoder) Known(i int) any {
	if i < len(dc.known) {
		return dc.known[i]
	}
	return nil
}

func (d *decoder) decode() (Message, error) {
	n, err := d.arrayLen()
	if err == nil && n != 2 {
		err = errorf("body is an array of %d elements, want 2", n)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	t, err := d.uint(math.MaxUint64)
	if err != nil {
		return nil, fmt.Errorf("%w: type: %v", ErrMalformed, err)
	}
	typ := Type(t)
	if uint64(typ) != t {
		typ = 0 // not a Type at all
	}
	var m Message
	const depth = 2 // of the payload map
	switch typ {
	case TypeHello:
		v := new(Hello)
		m, err = v, d.hello(v, depth)
	case TypeWelcome:
		v := new(Welcome)
		m, err = v, d.welcome(v, depth)
	case TypeDeltaBatch:
		v := new(DeltaBatch)
		m, err = v, d.deltaBatch(v, depth)
	case TypeFullState:
		v := new(FullState)
		m, err = v, d.fullState(v, depth)
	case TypeAck:
		v := new(Ack)
		m, err = v, d.ack(v, depth)
	case TypeTenantState:
		v := new(TenantState)
		m, err = v, d.tenantState(v, depth)
	case TypeRedirect:
		v := new(Redirect)
		m, err = v, d.redirect(v, depth)
	case TypeError:
		v := new(Error)
		m, err = v, d.error(v, depth)
	case TypePing:
		v := new(Ping)
		m, err = v, d.nonce(&v.Nonce, pingFields, depth)
	case TypePong:
		v := new(Pong)
		m, err = v, d.nonce(&v.Nonce, pongFields, depth)
	case TypeGrantAsk:
		v := new(GrantAsk)
		m, err = v, d.grantAsk(v, depth)
	case TypeGrant:
		v := new(Grant)
		m, err = v, d.grant(v, depth)
	case TypeRecall:
		v := new(Recall)
		m, err = v, d.recall(v, depth)
	default:
		return nil, fmt.Errorf("%w %d", ErrUnknownType, t)
	}
	if err == nil && len(d.b) > 0 {
		err = errorf("%d trailing bytes after the body", len(d.b))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return m, nil
}

// Field names by key, for error messages. The first name is the struct's,
// under key 0, which no field uses.
var (
	helloFields       = []string{"Hello", "AgentID", "Epoch", "Version", "Labels", "Token"}
	labelFields       = []string{"Label", "Key", "Value"}
	welcomeFields     = []string{"Welcome", "ServerID", "Version", "LastSeq", "NeedFullState", "Servers", "Classes"}
	deltaBatchFields  = []string{"DeltaBatch", "AgentID", "Epoch", "Seq", "AgentTime", "Entries", "Peaks", "Users"}
	userSetFields     = []string{"UserSet", "Tenant", "Day", "Hashes"}
	deltaEntryFields  = []string{"DeltaEntry", "Tenant", "Class", "Opened", "Closed", "SessionMicros", "Peak", "Refused", "ClosedMinutes", "Reconciled"}
	tenantPeakFields  = []string{"TenantPeak", "Tenant", "Peak"}
	countEntryFields  = []string{"CountEntry", "Tenant", "Class", "Open"}
	fullStateFields   = []string{"FullState", "AgentID", "Epoch", "Seq", "More", "Counts", "Usage", "Peaks", "Users"}
	ackFields         = []string{"Ack", "Seq", "Index"}
	tenantInfoFields  = []string{"TenantInfo", "Tenant", "Plan", "Ceiling", "Mode", "BurstPct", "Concurrency", "Suspended", "ClassLimits", "Over"}
	classLimitFields  = []string{"ClassLimit", "Class", "Ceiling", "Concurrency", "Over"}
	tenantStateFields = []string{"TenantState", "Full", "More", "Tenants"}
	redirectFields    = []string{"Redirect", "Leader", "Servers"}
	errorFields       = []string{"Error", "Code", "Message", "LastSeq"}
	pingFields        = []string{"Ping", "Nonce"}
	pongFields        = []string{"Pong", "Nonce"}
	grantPoolFields   = []string{"GrantPool", "Tenant", "Class"}
	grantWantFields   = []string{"GrantWant", "Tenant", "Class", "Want", "Hold", "Open"}
	grantAskFields    = []string{"GrantAsk", "AgentID", "ReqID", "Wants"}
	grantShareFields  = []string{"GrantShare", "Tenant", "Class", "Grant", "Free", "Ceiling", "Over"}
	grantFields       = []string{"Grant", "ReqID", "LeaseMillis", "Shares"}
	recallFields      = []string{"Recall", "Pools"}
)

// payload is fields for the payload of a message: an error's path starts
// with the message's name.
func (d *decoder) payload(names []string, depth int, field func(k uint64) error) error {
	if err := d.fields(names, depth, field); err != nil {
		return at(err, names[0])
	}
	return nil
}

// fields reads the map of a struct whose field names are names, and calls
// field for each entry with its key; field decodes the value, or skips it
// (with d.skip) for a key it does not know. depth is the nesting depth of the
// map. An error's path is prefixed with the name of the field.
func (d *decoder) fields(names []string, depth int, field func(k uint64) error) error {
	n, err := d.mapLen()
	if err != nil {
		return err
	}
	var seen uint64
	for ; n > 0; n-- {
		k, err := d.key(&seen, depth+1)
		if err == nil {
			err = field(k)
		}
		if err != nil {
			return atKey(err, names, k)
		}
	}
	return nil
}

// u64 is d.uint for a uint64 field.
func (d *decoder) u64(p *uint64) (err error) {
	*p, err = d.uint(math.MaxUint64)
	return err
}

// u32 is d.uint for a uint32 field.
func (d *decoder) u32(p *uint32) error {
	v, err := d.uint(math.MaxUint32)
	*p = uint32(v)
	return err
}

// ---- Hello ----

func appendHello(b []byte, m *Hello) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, m.AgentID)
	b = uintField(b, h, 2, m.Epoch)
	b = uintField(b, h, 3, uint64(m.Version))
	if len(m.Labels) > 0 {
		b = arrayField(b, h, 4, len(m.Labels))
		for i := range m.Labels {
			l := &m.Labels[i]
			h := len(b)
			b = append(b, mpFixmap)
			b = strField(b, h, 1, l.Key)
			b = strField(b, h, 2, l.Value)
		}
	}
	return strField(b, h, 5, m.Token)
}

func (d *decoder) hello(m *Hello, depth int) error {
	return d.payload(helloFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.AgentID, err = d.str()
		case 2:
			err = d.u64(&m.Epoch)
		case 3:
			err = d.u32(&m.Version)
		case 4:
			m.Labels, err = d.labels(depth + 1)
		case 5:
			m.Token, err = d.str()
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

func (d *decoder) labels(depth int) ([]Label, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]Label, n)
	for i := range s {
		l := &s[i]
		err := d.fields(labelFields, depth+1, func(k uint64) (err error) {
			switch k {
			case 1:
				l.Key, err = d.str()
			case 2:
				l.Value, err = d.str()
			default:
				err = d.skip(depth + 2)
			}
			return err
		})
		if err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

// ---- Welcome ----

func appendWelcome(b []byte, m *Welcome) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, m.ServerID)
	b = uintField(b, h, 2, uint64(m.Version))
	b = uintField(b, h, 3, m.LastSeq)
	b = boolField(b, h, 4, m.NeedFullState)
	b = appendStrings(b, h, 5, m.Servers)
	return appendStrings(b, h, 6, m.Classes)
}

func (d *decoder) welcome(m *Welcome, depth int) error {
	return d.payload(welcomeFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.ServerID, err = d.str()
		case 2:
			err = d.u32(&m.Version)
		case 3:
			err = d.u64(&m.LastSeq)
		case 4:
			m.NeedFullState, err = d.bool()
		case 5:
			m.Servers, err = d.strs()
		case 6:
			m.Classes, err = d.strs()
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

// appendStrings appends a []string field, an array of str.
func appendStrings(b []byte, h int, key byte, s []string) []byte {
	if len(s) == 0 {
		return b
	}
	b = arrayField(b, h, key, len(s))
	for _, v := range s {
		b = appendStr(b, v)
	}
	return b
}

func (d *decoder) strs() ([]string, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]string, n)
	for i := range s {
		if s[i], err = d.str(); err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

// ---- DeltaBatch ----

func appendDeltaBatch(b []byte, m *DeltaBatch) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, m.AgentID)
	b = uintField(b, h, 2, m.Epoch)
	b = uintField(b, h, 3, m.Seq)
	b = intField(b, h, 4, m.AgentTime)
	b = appendDeltaEntries(b, h, 5, m.Entries)
	b = appendTenantPeaks(b, h, 6, m.Peaks)
	return appendUserSets(b, h, 7, m.Users)
}

func appendUserSets(b []byte, h int, key byte, s []UserSet) []byte {
	return appendArray(b, h, key, s, appendUserSet)
}

func appendUserSet(b []byte, u *UserSet) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, u.Tenant)
	b = uintField(b, h, 2, uint64(u.Day))
	if len(u.Hashes) > 0 {
		b = arrayField(b, h, 3, len(u.Hashes))
		for _, x := range u.Hashes {
			b = appendUint(b, x)
		}
	}
	return b
}

// userSets decodes an array of UserSet.
func (d *decoder) userSets(depth int) ([]UserSet, error) {
	return decodeSlice[UserSet](d, userSetFields, depth, func(u *UserSet, k uint64) (err error) {
		switch k {
		case 1:
			u.Tenant, err = d.tenantID()
		case 2:
			err = d.u32(&u.Day)
		case 3:
			u.Hashes, err = d.uints()
		default:
			err = d.skip(depth + 2)
		}
		return err
	})
}

// uints decodes an array of unsigned integers.
func (d *decoder) uints() ([]uint64, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]uint64, n)
	for i := range s {
		if err := d.u64(&s[i]); err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

func (d *decoder) deltaBatch(m *DeltaBatch, depth int) error {
	return d.payload(deltaBatchFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.AgentID, err = d.str()
		case 2:
			err = d.u64(&m.Epoch)
		case 3:
			err = d.u64(&m.Seq)
		case 4:
			m.AgentTime, err = d.int()
		case 5:
			m.Entries, err = d.deltaEntries(depth + 1)
		case 6:
			m.Peaks, err = d.tenantPeaks(depth + 1)
		case 7:
			m.Users, err = d.userSets(depth + 1)
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

func appendDeltaEntries(b []byte, h int, key byte, s []DeltaEntry) []byte {
	if len(s) == 0 {
		return b
	}
	b = arrayField(b, h, key, len(s))
	for i := range s {
		b = appendDeltaEntry(b, &s[i])
	}
	return b
}

func appendDeltaEntry(b []byte, e *DeltaEntry) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, e.Tenant)
	b = strField(b, h, 2, e.Class)
	b = uintField(b, h, 3, e.Opened)
	b = uintField(b, h, 4, e.Closed)
	b = uintField(b, h, 5, e.SessionMicros)
	b = uintField(b, h, 6, e.Peak)
	b = uintField(b, h, 7, e.Refused)
	b = uintField(b, h, 8, e.ClosedMinutes)
	return uintField(b, h, 9, e.Reconciled)
}

// deltaEntries decodes an array of DeltaEntry: the bulk of the traffic, so
// deltaEntry does without the closure of fields and has a fast path.
func (d *decoder) deltaEntries(depth int) ([]DeltaEntry, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	var s []DeltaEntry
	if d.reuse && cap(d.entries) >= n {
		s = d.entries[:n]
		clear(s)
	} else {
		s = make([]DeltaEntry, n)
		if d.reuse {
			d.entries = s // kept for the Decoder's next batch
		}
	}
	for i := range s {
		d.entryKnown = nil
		if err := d.deltaEntry(&s[i], depth+1); err != nil {
			return nil, atIndex(err, i)
		}
		if d.reuse {
			d.knownOf = append(d.knownOf, d.entryKnown)
		}
	}
	return s, nil
}

// deltaEntry decodes a DeltaEntry. Its fast path reads what Append writes
// for small values (a known key followed by a positive fixint or a non-empty
// fixstr) with the cursor in a local variable; anything else, whether valid
// or not, goes through deltaField.
func (d *decoder) deltaEntry(e *DeltaEntry, depth int) error {
	var n int
	var err error
	if b := d.b; len(b) != 0 && b[0]&0xf0 == mpFixmap && int(b[0]&0x0f)*2 < len(b) {
		n = int(b[0] & 0x0f) // the usual case
		d.b = b[1:]
	} else if n, err = d.mapLen(); err != nil {
		return err
	}
	var seen uint64
	b := d.b // the cursor, kept in a local variable in the usual case
	for ; n > 0; n-- {
		// The usual case: a known key, not repeated, with a small
		// integer or a short string.
		if len(b) >= 2 && b[0]-1 < 7 && seen&(1<<b[0]) == 0 {
			k, c := b[0], b[1]
			if c <= mpPosFixintMax && k >= 3 {
				seen |= 1 << k
				b = b[2:]
				switch k {
				case 3:
					e.Opened = uint64(c)
				case 4:
					e.Closed = uint64(c)
				case 5:
					e.SessionMicros = uint64(c)
				case 6:
					e.Peak = uint64(c)
				default:
					e.Refused = uint64(c)
				}
				continue
			}
			if l := int(c) - mpFixstr; k <= 2 && l > 0 && l < 32 && l+2 <= len(b) {
				seen |= 1 << k
				s := b[2 : 2+l]
				b = b[2+l:]
				if k == 1 {
					e.Tenant = d.internTenant(s)
					d.entryKnown = d.known
				} else {
					e.Class = internClass(s)
				}
				continue
			}
		}
		d.b = b
		if err := d.deltaField(e, &seen, depth); err != nil {
			return err
		}
		b = d.b
	}
	d.b = b
	return nil
}

// deltaField reads a field of a DeltaEntry in the general case.
func (d *decoder) deltaField(e *DeltaEntry, seen *uint64, depth int) error {
	k, err := d.key(seen, depth+1)
	if err == nil {
		switch k {
		case 1:
			e.Tenant, err = d.tenantID()
			d.entryKnown = d.known
		case 2:
			e.Class, err = d.class()
		case 3:
			err = d.u64(&e.Opened)
		case 4:
			err = d.u64(&e.Closed)
		case 5:
			err = d.u64(&e.SessionMicros)
		case 6:
			err = d.u64(&e.Peak)
		case 7:
			err = d.u64(&e.Refused)
		case 8:
			err = d.u64(&e.ClosedMinutes)
		case 9:
			err = d.u64(&e.Reconciled)
		default:
			err = d.skip(depth + 1)
		}
	}
	if err != nil {
		return atKey(err, deltaEntryFields, k)
	}
	return nil
}

func appendTenantPeaks(b []byte, h int, key byte, s []TenantPeak) []byte {
	return appendArray(b, h, key, s, appendTenantPeak)
}

func appendTenantPeak(b []byte, p *TenantPeak) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, p.Tenant)
	return uintField(b, h, 2, p.Peak)
}

func (d *decoder) tenantPeaks(depth int) ([]TenantPeak, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]TenantPeak, n)
	for i := range s {
		p := &s[i]
		err := d.fields(tenantPeakFields, depth+1, func(k uint64) (err error) {
			switch k {
			case 1:
				p.Tenant, err = d.tenantID()
			case 2:
				err = d.u64(&p.Peak)
			default:
				err = d.skip(depth + 2)
			}
			return err
		})
		if err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

// ---- FullState ----

func appendFullState(b []byte, m *FullState) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, m.AgentID)
	b = uintField(b, h, 2, m.Epoch)
	b = uintField(b, h, 3, m.Seq)
	b = boolField(b, h, 4, m.More)
	b = appendCountEntries(b, h, 5, m.Counts)
	b = appendDeltaEntries(b, h, 6, m.Usage)
	b = appendTenantPeaks(b, h, 7, m.Peaks)
	return appendUserSets(b, h, 8, m.Users)
}

func (d *decoder) fullState(m *FullState, depth int) error {
	return d.payload(fullStateFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.AgentID, err = d.str()
		case 2:
			err = d.u64(&m.Epoch)
		case 3:
			err = d.u64(&m.Seq)
		case 4:
			m.More, err = d.bool()
		case 5:
			m.Counts, err = d.countEntries(depth + 1)
		case 6:
			m.Usage, err = d.deltaEntries(depth + 1)
		case 7:
			m.Peaks, err = d.tenantPeaks(depth + 1)
		case 8:
			m.Users, err = d.userSets(depth + 1)
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

func appendCountEntries(b []byte, h int, key byte, s []CountEntry) []byte {
	return appendArray(b, h, key, s, appendCountEntry)
}

func appendCountEntry(b []byte, c *CountEntry) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, c.Tenant)
	b = strField(b, h, 2, c.Class)
	return uintField(b, h, 3, c.Open)
}

func (d *decoder) countEntries(depth int) ([]CountEntry, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]CountEntry, n)
	for i := range s {
		c := &s[i]
		err := d.fields(countEntryFields, depth+1, func(k uint64) (err error) {
			switch k {
			case 1:
				c.Tenant, err = d.tenantID()
			case 2:
				c.Class, err = d.class()
			case 3:
				err = d.u64(&c.Open)
			default:
				err = d.skip(depth + 2)
			}
			return err
		})
		if err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

// ---- Ack ----

func appendAck(b []byte, m *Ack) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = uintField(b, h, 1, m.Seq)
	return uintField(b, h, 2, m.Index)
}

func (d *decoder) ack(m *Ack, depth int) error {
	return d.payload(ackFields, depth, func(k uint64) error {
		switch k {
		case 1:
			return d.u64(&m.Seq)
		case 2:
			return d.u64(&m.Index)
		}
		return d.skip(depth + 1)
	})
}

// ---- TenantState ----

func appendTenantState(b []byte, m *TenantState) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = boolField(b, h, 1, m.Full)
	b = boolField(b, h, 2, m.More)
	if len(m.Tenants) > 0 {
		b = arrayField(b, h, 3, len(m.Tenants))
		for i := range m.Tenants {
			b = appendTenantInfo(b, &m.Tenants[i])
		}
	}
	return b
}

func appendTenantInfo(b []byte, t *TenantInfo) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, t.Tenant)
	b = strField(b, h, 2, t.Plan)
	b = uintField(b, h, 3, t.Ceiling)
	b = strField(b, h, 4, t.Mode)
	b = uintField(b, h, 5, uint64(t.BurstPct))
	b = uintField(b, h, 6, t.Concurrency)
	b = boolField(b, h, 7, t.Suspended)
	b = appendArray(b, h, 8, t.ClassLimits, func(b []byte, c *ClassLimit) []byte {
		h := len(b)
		b = append(b, mpFixmap)
		b = strField(b, h, 1, c.Class)
		b = uintField(b, h, 2, c.Ceiling)
		b = uintField(b, h, 3, c.Concurrency)
		return uintField(b, h, 4, c.Over)
	})
	return uintField(b, h, 9, t.Over)
}

func (d *decoder) tenantState(m *TenantState, depth int) error {
	return d.payload(tenantStateFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.Full, err = d.bool()
		case 2:
			m.More, err = d.bool()
		case 3:
			m.Tenants, err = d.tenantInfos(depth + 1)
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

func (d *decoder) tenantInfos(depth int) ([]TenantInfo, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]TenantInfo, n)
	for i := range s {
		t := &s[i]
		err := d.fields(tenantInfoFields, depth+1, func(k uint64) (err error) {
			switch k {
			case 1:
				t.Tenant, err = d.tenantID()
			case 2:
				t.Plan, err = d.str()
			case 3:
				err = d.u64(&t.Ceiling)
			case 4:
				t.Mode, err = d.mode()
			case 5:
				err = d.u32(&t.BurstPct)
			case 6:
				err = d.u64(&t.Concurrency)
			case 7:
				t.Suspended, err = d.bool()
			case 8:
				t.ClassLimits, err = d.classLimits(depth + 2)
			case 9:
				err = d.u64(&t.Over)
			default:
				err = d.skip(depth + 2)
			}
			return err
		})
		if err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

func (d *decoder) classLimits(depth int) ([]ClassLimit, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]ClassLimit, n)
	for i := range s {
		c := &s[i]
		err := d.fields(classLimitFields, depth+1, func(k uint64) (err error) {
			switch k {
			case 1:
				c.Class, err = d.class()
			case 2:
				err = d.u64(&c.Ceiling)
			case 3:
				err = d.u64(&c.Concurrency)
			case 4:
				err = d.u64(&c.Over)
			default:
				err = d.skip(depth + 2)
			}
			return err
		})
		if err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

// mode reads a TenantInfo.Mode, returning the known modes as constants.
func (d *decoder) mode() (string, error) {
	b, err := d.strBytes()
	if err != nil || len(b) == 0 {
		return "", err
	}
	switch string(b) {
	case "strict":
		return "strict", nil
	case "soft":
		return "soft", nil
	case "meter":
		return "meter", nil
	}
	return string(b), nil
}

// ---- Redirect ----

func appendRedirect(b []byte, m *Redirect) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, m.Leader)
	return appendStrings(b, h, 2, m.Servers)
}

func (d *decoder) redirect(m *Redirect, depth int) error {
	return d.payload(redirectFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.Leader, err = d.str()
		case 2:
			m.Servers, err = d.strs()
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

// ---- Error ----

func appendError(b []byte, m *Error) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = uintField(b, h, 1, uint64(m.Code))
	b = strField(b, h, 2, m.Message)
	return uintField(b, h, 3, m.LastSeq)
}

func (d *decoder) error(m *Error, depth int) error {
	return d.payload(errorFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			var v uint64
			v, err = d.uint(math.MaxUint16)
			m.Code = ErrorCode(v)
		case 2:
			m.Message, err = d.str()
		case 3:
			err = d.u64(&m.LastSeq)
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

// ---- Ping, Pong ----

func appendNonce(b []byte, nonce uint64) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	return uintField(b, h, 1, nonce)
}

func (d *decoder) nonce(p *uint64, names []string, depth int) error {
	return d.payload(names, depth, func(k uint64) error {
		if k == 1 {
			return d.u64(p)
		}
		return d.skip(depth + 1)
	})
}

// ---- GrantAsk, Grant, Recall ----

func appendGrantAsk(b []byte, m *GrantAsk) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = strField(b, h, 1, m.AgentID)
	b = uintField(b, h, 2, m.ReqID)
	return appendArray(b, h, 3, m.Wants, func(b []byte, w *GrantWant) []byte {
		h := len(b)
		b = append(b, mpFixmap)
		b = strField(b, h, 1, w.Tenant)
		b = strField(b, h, 2, w.Class)
		b = uintField(b, h, 3, w.Want)
		b = uintField(b, h, 4, w.Hold)
		return uintField(b, h, 5, w.Open)
	})
}

func (d *decoder) grantAsk(m *GrantAsk, depth int) error {
	return d.payload(grantAskFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.AgentID, err = d.str()
		case 2:
			err = d.u64(&m.ReqID)
		case 3:
			m.Wants, err = decodeSlice[GrantWant](d, grantWantFields, depth+1, func(w *GrantWant, k uint64) (err error) {
				switch k {
				case 1:
					w.Tenant, err = d.tenantID()
				case 2:
					w.Class, err = d.class()
				case 3:
					err = d.u64(&w.Want)
				case 4:
					err = d.u64(&w.Hold)
				case 5:
					err = d.u64(&w.Open)
				default:
					err = d.skip(depth + 3)
				}
				return err
			})
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

func appendGrant(b []byte, m *Grant) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	b = uintField(b, h, 1, m.ReqID)
	b = uintField(b, h, 2, m.LeaseMillis)
	return appendArray(b, h, 3, m.Shares, func(b []byte, g *GrantShare) []byte {
		h := len(b)
		b = append(b, mpFixmap)
		b = strField(b, h, 1, g.Tenant)
		b = strField(b, h, 2, g.Class)
		b = uintField(b, h, 3, g.Grant)
		b = uintField(b, h, 4, g.Free)
		b = uintField(b, h, 5, g.Ceiling)
		return uintField(b, h, 6, g.Over)
	})
}

func (d *decoder) grant(m *Grant, depth int) error {
	return d.payload(grantFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			err = d.u64(&m.ReqID)
		case 2:
			err = d.u64(&m.LeaseMillis)
		case 3:
			m.Shares, err = decodeSlice[GrantShare](d, grantShareFields, depth+1, func(g *GrantShare, k uint64) (err error) {
				switch k {
				case 1:
					g.Tenant, err = d.tenantID()
				case 2:
					g.Class, err = d.class()
				case 3:
					err = d.u64(&g.Grant)
				case 4:
					err = d.u64(&g.Free)
				case 5:
					err = d.u64(&g.Ceiling)
				case 6:
					err = d.u64(&g.Over)
				default:
					err = d.skip(depth + 3)
				}
				return err
			})
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

func appendRecall(b []byte, m *Recall) []byte {
	h := len(b)
	b = append(b, mpFixmap)
	return appendArray(b, h, 1, m.Pools, func(b []byte, p *GrantPool) []byte {
		h := len(b)
		b = append(b, mpFixmap)
		b = strField(b, h, 1, p.Tenant)
		return strField(b, h, 2, p.Class)
	})
}

func (d *decoder) recall(m *Recall, depth int) error {
	return d.payload(recallFields, depth, func(k uint64) (err error) {
		switch k {
		case 1:
			m.Pools, err = decodeSlice[GrantPool](d, grantPoolFields, depth+1, func(p *GrantPool, k uint64) (err error) {
				switch k {
				case 1:
					p.Tenant, err = d.tenantID()
				case 2:
					p.Class, err = d.class()
				default:
					err = d.skip(depth + 3)
				}
				return err
			})
		default:
			err = d.skip(depth + 1)
		}
		return err
	})
}

// decodeSlice reads an array of structs whose field names are names, at
// nesting depth depth; field decodes one field of one element by its key.
func decodeSlice[T any](d *decoder, names []string, depth int, field func(v *T, k uint64) error) ([]T, error) {
	n, err := d.arrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]T, n)
	for i := range s {
		v := &s[i]
		if err := d.fields(names, depth+1, func(k uint64) error { return field(v, k) }); err != nil {
			return nil, atIndex(err, i)
		}
	}
	return s, nil
}

// appendArray writes s under key of the map whose header is at h, each
// element with elem; an empty s writes nothing (zero values are left out).
func appendArray[T any](b []byte, h int, key byte, s []T, elem func([]byte, *T) []byte) []byte {
	if len(s) == 0 {
		return b
	}
	b = arrayField(b, h, key, len(s))
	for i := range s {
		b = elem(b, &s[i])
	}
	return b
}
