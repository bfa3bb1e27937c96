package wire

// SplitFullState splits fs into parts whose bodies each encode to at most
// maxBody bytes (DefaultMaxFrame if maxBody ≤ 0), to be sent as consecutive
// frames. Counts, then Usage, then Peaks are cut into consecutive runs, in
// order (and Users last); every part carries fs's AgentID, Epoch and Seq, and all parts but
// the last have More set (the last has fs.More). A message that fits comes
// back as a single part.
//
// The parts' slices are runs of fs's, sharing their backing arrays; when fs
// is split, their capacity is cut to their length, so that appending to one
// does not overwrite the next. An element too large to fit a part on its own
// gets a part of its own, which is then over maxBody.
func SplitFullState(fs FullState, maxBody int) []*FullState {
	if maxBody <= 0 {
		maxBody = DefaultMaxFrame
	}
	head := fs
	head.Counts, head.Usage, head.Peaks, head.Users = nil, nil, nil, nil
	var p packer
	size := len(Append(p.scratch, &head)) +
		listSize(&p, fs.Counts, appendCountEntry) +
		listSize(&p, fs.Usage, appendDeltaEntry) +
		listSize(&p, fs.Peaks, appendTenantPeak) +
		listSize(&p, fs.Users, appendUserSet)
	if size <= maxBody {
		return []*FullState{&fs}
	}
	head.More = true
	var parts []*FullState
	cur := new(FullState)
	*cur = head
	p.max, p.base = maxBody, len(Append(p.scratch[:0], &head))
	p.size = p.base
	p.next = func() {
		parts = append(parts, cur)
		cur = new(FullState)
		*cur = head
	}
	pack(&p, fs.Counts, appendCountEntry, func(s []CountEntry) { cur.Counts = s })
	pack(&p, fs.Usage, appendDeltaEntry, func(s []DeltaEntry) { cur.Usage = s })
	pack(&p, fs.Peaks, appendTenantPeak, func(s []TenantPeak) { cur.Peaks = s })
	pack(&p, fs.Users, appendUserSet, func(s []UserSet) { cur.Users = s })
	cur.More = fs.More
	return append(parts, cur)
}

// SplitTenantState splits ts into parts whose bodies each encode to at most
// maxBody bytes (DefaultMaxFrame if maxBody ≤ 0), to be sent as consecutive
// frames. Tenants is cut into consecutive runs, in order; every part keeps
// ts.Full, and all parts but the last have More set (the last has ts.More).
// A message that fits comes back as a single part.
//
// The parts' slices are runs of ts.Tenants, sharing its backing array; when
// ts is split, their capacity is cut to their length, so that appending to
// one does not overwrite the next. A tenant too large to fit a part on its
// own gets a part of its own, which is then over maxBody.
func SplitTenantState(ts TenantState, maxBody int) []*TenantState {
	if maxBody <= 0 {
		maxBody = DefaultMaxFrame
	}
	head := TenantState{Full: ts.Full, More: ts.More}
	var p packer
	if len(Append(p.scratch, &head))+listSize(&p, ts.Tenants, appendTenantInfo) <= maxBody {
		return []*TenantState{&ts}
	}
	head.More = true
	var parts []*TenantState
	cur := new(TenantState)
	*cur = head
	p.max, p.base = maxBody, len(Append(p.scratch[:0], &head))
	p.size = p.base
	p.next = func() {
		parts = append(parts, cur)
		cur = new(TenantState)
		*cur = head
	}
	pack(&p, ts.Tenants, appendTenantInfo, func(s []TenantInfo) { cur.Tenants = s })
	cur.More = ts.More
	return append(parts, cur)
}

// packer fills the parts of a split message with the elements of its lists.
type packer struct {
	max     int    // the limit on a part's body
	base    int    // the body size of a part without any element
	size    int    // the body size of the current part, at most
	elems   int    // the number of elements in the current part
	next    func() // closes the current part and starts an empty one
	scratch []byte
}

// listOverhead is what a list adds to a part besides its elements, at most:
// its key (one byte) and the longest array header (five).
const listOverhead = 1 + 5

// listSize returns the encoded size of s as a field: its key, the array
// header and the elements, of which enc appends the encoding.
func listSize[T any](p *packer, s []T, enc func([]byte, *T) []byte) int {
	if len(s) == 0 {
		return 0
	}
	n := len(appendArrayHeader(append(p.scratch[:0], 0), len(s)))
	for i := range s {
		p.scratch = enc(p.scratch[:0], &s[i])
		n += len(p.scratch)
	}
	return n
}

// pack places the elements of s, of which enc appends the encoding, into the
// current part and the following ones. set gives the current part its run of
// s; it is called before p.next closes the part and for the last run.
func pack[T any](p *packer, s []T, enc func([]byte, *T) []byte, set func([]T)) {
	start := 0 // the first element of s in the current part
	for i := range s {
		p.scratch = enc(p.scratch[:0], &s[i])
		n := len(p.scratch)
		if i == start {
			n += listOverhead
		}
		if p.size+n > p.max && p.elems > 0 {
			if i > start {
				set(s[start:i:i])
			}
			p.next()
			p.size, p.elems = p.base, 0
			start = i
			n = len(p.scratch) + listOverhead
		}
		p.size += n
		p.elems++
	}
	if start < len(s) {
		set(s[start:len(s):len(s)])
	}
}
