package main

import (
	"fmt"
	"io"

	"go.temporal.io/sdk/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func newLogger(w io.Writer, level string) *zap.Logger {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.InfoLevel
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), lvl))
}

// sdkLogger hands the Temporal SDK's logs to zap.
type sdkLogger struct{ s *zap.SugaredLogger }

func newSDKLogger(z *zap.Logger) log.Logger {
	return sdkLogger{z.WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

func (l sdkLogger) Debug(msg string, kv ...any) { l.s.Debugw(msg, fixKV(kv)...) }
func (l sdkLogger) Info(msg string, kv ...any)  { l.s.Infow(msg, fixKV(kv)...) }
func (l sdkLogger) Warn(msg string, kv ...any)  { l.s.Warnw(msg, fixKV(kv)...) }
func (l sdkLogger) Error(msg string, kv ...any) { l.s.Errorw(msg, fixKV(kv)...) }

// With implements log.WithLogger, so workflow and activity loggers keep their fields.
func (l sdkLogger) With(kv ...any) log.Logger { return sdkLogger{l.s.With(fixKV(kv)...)} }

// fixKV makes sure keys are strings: zap drops pairs whose key is not.
func fixKV(kv []any) []any {
	for i := 0; i+1 < len(kv); i += 2 {
		if _, ok := kv[i].(string); !ok {
			kv[i] = fmt.Sprint(kv[i])
		}
	}
	return kv
}
