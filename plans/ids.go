package plans

import "fmt"

// Limits on ids: tenant ids are at most MaxTenantIDLen bytes; agent, node and
// session ids at most MaxIDLen.
const (
	MaxTenantIDLen = 64
	MaxIDLen       = 128
)

// ValidateID checks that s, the id of a what ("tenant", "session"...), is 1
// to max bytes of printable ASCII without spaces.
func ValidateID(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%s id is empty", what)
	}
	if len(s) > max {
		return fmt.Errorf("%s id is %d bytes long (at most %d)", what, len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%s id %q: only printable ASCII without spaces is allowed", what, s)
		}
	}
	return nil
}

// ValidateTenantID checks a tenant id.
func ValidateTenantID(s string) error { return ValidateID("tenant", s, MaxTenantIDLen) }
