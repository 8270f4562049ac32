package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a duration as kache writes them: a number and a unit,
// one or more times ("30d", "12h", "90m", "1d12h"), with the units s, m, h,
// d (24 h) and w (7 d). A Go duration ("1h30m", "1.5h") is accepted too,
// and "0" means none.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	if s == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i <= 0 {
			return 0, fmt.Errorf("duration %q: want a number and a unit (s, m, h, d, w), e.g. 30d", s)
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		unit, ok := durationUnits[rest[i]]
		if !ok {
			return 0, fmt.Errorf("duration %q: unknown unit %q (want s, m, h, d or w)", s, rest[i])
		}
		if n > int64(time.Duration(1<<63-1)/unit) || total > time.Duration(1<<63-1)-time.Duration(n)*unit {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
	}
	return total, nil
}

var durationUnits = map[byte]time.Duration{
	's': time.Second,
	'm': time.Minute,
	'h': time.Hour,
	'd': 24 * time.Hour,
	'w': 7 * 24 * time.Hour,
}

// FormatDuration writes d the way ParseDuration reads it, in whole days
// when it is some.
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// kacheDuration is a flag.Value of ParseDuration.
type kacheDuration struct{ d *time.Duration }

func (v kacheDuration) String() string {
	if v.d == nil {
		return ""
	}
	return FormatDuration(*v.d)
}

func (v kacheDuration) Set(s string) error {
	d, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}
