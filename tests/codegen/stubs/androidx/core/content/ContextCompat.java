package androidx.core.content;

public class ContextCompat {
    public static int checkSelfPermission(android.content.Context context, String permission) { throw new RuntimeException("stub"); }
    public static java.util.concurrent.Executor getMainExecutor(android.content.Context context) { throw new RuntimeException("stub"); }
}
