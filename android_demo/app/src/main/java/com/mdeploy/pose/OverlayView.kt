package com.mdeploy.pose

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View
import com.mdeploy.pose.generated.Pose
import com.mdeploy.pose.generated.PoseModelConfig
import com.mdeploy.pose.generated.ViewMapping

/**
 * Draws every person's skeleton over the camera preview (which fills the view, cropping the
 * frame), one colour per person; when the keypoints carry depth (a 3-D model), each joint and
 * bone is coloured by its depth instead: warm is near, cool is far, over the person's own range.
 */
class OverlayView(
    context: Context,
    attrs: AttributeSet? = null,
) : View(context, attrs) {
    private var people: List<Pose> = emptyList()
    private val bonePaint =
        Paint().apply {
            strokeWidth = 8f
            style = Paint.Style.STROKE
            isAntiAlias = true
        }
    private val jointPaint =
        Paint().apply {
            color = Color.YELLOW
            style = Paint.Style.FILL
            isAntiAlias = true
        }

    /** Show `people` (in the pixels of a `frameWidth` x `frameHeight` frame). */
    fun show(
        people: List<Pose>,
        frameWidth: Int,
        frameHeight: Int,
    ) {
        this.people = people.map { ViewMapping.toView(it, frameWidth, frameHeight, width, height, fill = true) }
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        people.forEachIndexed { i, pose ->
            val personColor = PERSON_COLORS[i % PERSON_COLORS.size]
            val byDepth = pose.hasDepth
            for ((a, b) in pose.bones()) {
                bonePaint.color = if (byDepth) depthColor(pose.depthShare((a.depthMm + b.depthMm) / 2f), personColor) else personColor
                canvas.drawLine(a.x, a.y, b.x, b.y, bonePaint)
            }
            for (k in pose.keypoints) {
                if (k.score >= PoseModelConfig.SCORE_THRESHOLD) {
                    jointPaint.color = if (byDepth) depthColor(pose.depthShare(k.depthMm), personColor) else Color.YELLOW
                    canvas.drawCircle(k.x, k.y, 10f, jointPaint)
                }
            }
        }
    }

    companion object {
        /** Bone colours, one per person in the order the model lists them (the first: green). */
        val PERSON_COLORS: IntArray = intArrayOf(Color.GREEN, Color.CYAN, Color.MAGENTA, Color.RED, Color.BLUE, Color.WHITE)

        /** Hue of the nearest and the farthest depth: red (warm, near) through yellow and green to blue (cool, far). */
        const val NEAR_HUE: Float = 0f
        const val FAR_HUE: Float = 240f

        /** A depth share (0 nearest .. 1 farthest, Pose.depthShare) as a colour; `fallback` when it is unknown (NaN). */
        fun depthColor(
            share: Float,
            fallback: Int,
        ): Int =
            if (share.isNaN()) {
                fallback
            } else {
                Color.HSVToColor(floatArrayOf(NEAR_HUE + (FAR_HUE - NEAR_HUE) * share, 1f, 1f))
            }
    }
}
