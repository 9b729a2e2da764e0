package androidx.camera.lifecycle;

public final class ProcessCameraProvider {
    public static com.google.common.util.concurrent.ListenableFuture<ProcessCameraProvider> getInstance(android.content.Context context) { throw new RuntimeException("stub"); }
    public androidx.camera.core.Camera bindToLifecycle(androidx.lifecycle.LifecycleOwner lifecycleOwner, androidx.camera.core.CameraSelector cameraSelector, androidx.camera.core.UseCase... useCases) { throw new RuntimeException("stub"); }
    public void unbindAll() {}
}
